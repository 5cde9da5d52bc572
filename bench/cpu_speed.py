"""CPU speed of l335q's two training engines against plain PyTorch, side by side in one process.

  cnn     one epoch of the README's demo size: the first 10,000 training images, batch 64, Adam 1e-3, the
          default CNN (``models.DEFAULT_CNN``, read at run time), train pass + train- and test-accuracy passes.
          reference: the PyTorch Quickstart loop (torchvision FashionMNIST + ToTensor through DataLoaders,
          ``bench/cls_study.py``'s ``reference_epoch``); l335q: ``classify.engine.train`` (``Epoch.seconds``).
  fields  the Tancik setup at 128 px: every-other-pixel training split, Gaussian Fourier features m 256 σ 10,
          4×256 ReLU MLP, sigmoid output, Adam 1e-3, 500 steps, 3 seeds.
          reference: the same fits in plain PyTorch one seed at a time (nn.Linear layers built after
          ``torch.manual_seed(seed)``, the seed's frequency matrix, full-batch MSE); l335q: ``fields.engine.fit_image``
          (fp32, the default: 3 seeds one by one at this size, ``seed_chunk``), and again with the job option
          ``precision: bf16`` (the training forward in bfloat16). Each prints its seeds' held-out PSNR.
Runs are interleaved (reference, l335q, reference, ...) after one warm-up each; medians of --repeat.
The ratio is reference seconds / l335q seconds (above 1: l335q is faster). With --check, two l335q runs of the
same seed must give identical numbers (reproducibility on the CPU).
Usage: python bench/cpu_speed.py {cnn,fields,both} [--repeat 3] [--threads 2] [--steps 500] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cls_study import engine_run, reference_epoch  # noqa: E402  (the Quickstart reference epoch)

from l335q.classify import models  # noqa: E402
from l335q.data import fashion_mnist  # noqa: E402
from l335q.data.images import load_image, resize, split_pixels  # noqa: E402
from l335q.fields.encodings import encode, frequency_matrix  # noqa: E402
from l335q.fields.engine import FieldConfig, fit_image  # noqa: E402
from l335q.fields.names import PRECISIONS  # noqa: E402
from l335q.fields.pixels import seed_psnr  # noqa: E402

SUBSET, BATCH = 10_000, 64
TANCIK = FieldConfig(depth=4, width=256, encoding="gaussian", features=256, sigma=10.0, steps=500)
SEEDS = [0, 1, 2]


def interleaved(runs: dict, repeat: int) -> dict[str, tuple[float, list]]:
    """name -> (median seconds, every result) of each ``runs[name]()`` (returning (seconds, result)), the runs
    taken in turn ``repeat`` times (reference, l335q, reference, ...)."""
    seconds, results = {n: [] for n in runs}, {n: [] for n in runs}
    for _ in range(repeat):
        for name, run in runs.items():
            t, r = run()
            seconds[name].append(t)
            results[name].append(r)
        print("  " + "   ".join(f"{n} {seconds[n][-1]:.2f} s" for n in runs), flush=True)
    return {n: (statistics.median(seconds[n]), results[n]) for n in runs}


# ----------------------------------------------------------------------------- CNN epoch

def cnn(repeat: int) -> dict:
    fashion_mnist.load("cpu", SUBSET)
    print(f"cnn: {models.DEFAULT_CNN.describe()}", flush=True)

    def ref():
        return reference_epoch("cnn", "cpu", BATCH, SUBSET), None

    def ours():
        e = engine_run("cnn", "cpu", BATCH, 1, 0, SUBSET).epochs[0]
        return e.seconds, (e.train_acc, e.test_acc, e.train_loss, e.test_loss)

    ref()                                            # warm-up: dataset files, oneDNN kernels
    ours()
    (r, _), (o, outs) = interleaved({"reference": ref, "l335q": ours}, repeat).values()
    return {"benchmark": "cnn epoch", "config": models.DEFAULT_CNN.describe(), "train_images": SUBSET,
            "batch": BATCH, "reference_s": round(r, 2), "l335q_s": round(o, 2), "ratio": round(r / o, 2),
            "same_numbers": all(x == outs[0] for x in outs), "l335q_epoch": outs[0]}


# ----------------------------------------------------------------------------- field fits

def tancik_image():
    return resize(load_image("sample:astronaut"), 128)


def reference_fit(img, cfg: FieldConfig, seed: int) -> tuple[float, float]:
    """One seed in plain PyTorch: (train PSNR, held-out PSNR)."""
    (coords, rgb), (hc, hrgb) = split_pixels(img, "every-other")
    coords, rgb = torch.as_tensor(coords), torch.as_tensor(rgb)
    B = frequency_matrix(cfg.encoding, [seed], cfg.features, cfg.sigma)
    x = encode(coords, B)[0]
    torch.manual_seed(seed)
    dims = [x.shape[1]] + [cfg.width] * (cfg.depth - 1) + [3]
    layers = []
    for k, (i, o) in enumerate(zip(dims[:-1], dims[1:])):
        layers += [nn.Linear(i, o)] + ([nn.ReLU()] if k < cfg.depth - 1 else [nn.Sigmoid()])
    mlp = nn.Sequential(*layers)
    opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
    for _ in range(cfg.steps):
        loss = F.mse_loss(mlp(x), rgb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        train = seed_psnr(mlp(x).clamp(0, 1)[None], rgb[None])
        held = seed_psnr(mlp(encode(torch.as_tensor(hc), B)[0]).clamp(0, 1)[None], torch.as_tensor(hrgb)[None])
    return float(train[0]), float(held[0])


def fields(repeat: int, steps: int = TANCIK.steps) -> list[dict]:
    """Two rows against one reference: l335q at the default fp32 (the same fits, bit for bit reproducible) and
    with ``precision: bf16`` (a job's opt-in: the forward's matmuls in bfloat16; PSNR gap printed)."""
    img = tancik_image()
    cfg = FieldConfig(**{**TANCIK.as_dict(), "steps": steps})

    def ref():
        t0 = time.perf_counter()
        psnrs = [reference_fit(img, cfg, s) for s in SEEDS]
        return time.perf_counter() - t0, [round(h, 3) for _, h in psnrs]

    def ours(precision: str):
        def run():
            t0 = time.perf_counter()
            res = fit_image(img, replace(cfg, precision=precision), SEEDS, "cpu", split="every-other")
            return time.perf_counter() - t0, [round(h, 3) for h in res.heldout_psnr]
        return run

    warm = FieldConfig(**{**TANCIK.as_dict(), "steps": 20})
    reference_fit(img, warm, 0)
    for precision in PRECISIONS:
        fit_image(img, replace(warm, precision=precision), SEEDS, "cpu", split="every-other")
    runs = interleaved({"reference": ref, **{f"l335q {p}": ours(p) for p in PRECISIONS}}, repeat)
    r, refs = runs["reference"]
    rows = []
    for p in PRECISIONS:
        o, outs = runs[f"l335q {p}"]
        print(f"  held-out PSNR per seed: reference {refs[0]}, l335q {p} {outs[0]}", flush=True)
        rows.append({"benchmark": "field fits" + ("" if p == "fp32" else f" {p}"), "precision": p,
                     "setup": f"128 px every-other, gaussian m 256 σ 10, 4x256, Adam 1e-3, {steps} steps",
                     "seeds": SEEDS, "reference_s": round(r, 2), "l335q_s": round(o, 2), "ratio": round(r / o, 2),
                     "reference_heldout_psnr": refs[0], "l335q_heldout_psnr": outs[0],
                     "max_psnr_gap_db": round(max(abs(a - b) for a, b in zip(refs[0], outs[0])), 3),
                     "same_numbers": all(x == outs[0] for x in outs)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("which", choices=("cnn", "fields", "both"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=TANCIK.steps, help="field fits: steps (the setup's 500 by default)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    head = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "repeat": a.repeat, "load_avg_start": os.getloadavg()[0]}
    rows = []
    for which in (("cnn", "fields") if a.which == "both" else (a.which,)):
        new = [cnn(a.repeat)] if which == "cnn" else fields(a.repeat, a.steps)
        for row in new:
            print(json.dumps(row), flush=True)
        rows += new
    head["load_avg_end"] = os.getloadavg()[0]
    print(f"{'benchmark':<16} {'reference s':>11} {'l335q s':>8} {'ratio':>6}  same numbers  PSNR gap dB")
    for r in rows:
        print(f"{r['benchmark']:<16} {r['reference_s']:>11.2f} {r['l335q_s']:>8.2f} {r['ratio']:>5.2f}x  "
              f"{str(r['same_numbers']):<12}  {r.get('max_psnr_gap_db', '–')}")
    if a.out:
        Path(a.out).write_text(json.dumps({**head, "results": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
