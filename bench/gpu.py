"""Every GPU measurement of issue 15, each against its plain reference in the same process, as ONE JSON file.

  tancik    the Tancik et al. 2D fit (512² image, the 256² every-other pixels, 4 x 256 ReLU, Gaussian m 256,
            σ 10, Adam 1e-3, 2000 steps): eager fp32 (``fit_image``) against the fast path (``fast=True``: CUDA
            graphs) in fp32, with TF32 matmuls, and with a bfloat16 forward (``precision="bf16"``); seconds and
            train/held-out PSNR of each (every fit scored by an fp32 render).
  inr_init  500 fits at the practical's size (64 px, raw (x, y), 4 x 256 ReLU, ReLU output, Adam 1e-3, 1000
            steps; 5 initialisers x 100 seeds, each initialiser one batched model) with the fast path and TF32,
            against one fit at a time (eager fp32), timed on a few fits and extrapolated to 500; the PSNR of
            those seeds in both runs.
  cls       the whole classification study (cls-compare: FCN and CNN; cls-sweep of the CNN: lr 0.1/1e-3/1e-5
            at batch 64, batch 4/64/512 at lr 1e-3; 3 seeds per cell, full Fashion-MNIST, 10 epochs, train and
            test accuracy every epoch), each cell's seeds as one fused model (``classify.fused``, CUDA graphs,
            TF32), against the Quickstart loop (DataLoader + ToTensor, train pass + two accuracy passes per
            epoch), timed on a slice of each cell and extrapolated. A fast cell that would overrun the budget
            stops after whole epochs and is extrapolated (said so in the JSON).
  cls_check the fused, graphed path against the plain engine on the device (fp32, 2 seeds, 1 epoch on 6000
            images): the largest per-seed differences of accuracy and loss.
  accuracy  (if time is left) one seed of cls-compare's CNN trained by the plain engine (``engine.train``,
            eager, fp32): its final test accuracy beside the fused seeds'.
Every figure carries ``kind``: "measured" or "extrapolated (how)". The JSON is rewritten after each part.
Usage: PYTHONUNBUFFERED=1 python bench/gpu.py --out gpu.json --budget-s 240     (CUDA; needs $L335Q_DATA)
       python bench/gpu.py --tiny --out tiny.json                              (tiny sizes, CPU: the test)
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))          # gpu_common, gpu_cls (also under runpy)

from gpu_cls import accuracy_check, cls_check, cls_study  # noqa: E402
from gpu_common import Bench, r3, tf32  # noqa: E402

from l335q.data.images import load_image, resize, split_pixels  # noqa: E402
from l335q.fields.engine import FieldConfig, fit_image  # noqa: E402
from l335q.fields.pixels import Pixels  # noqa: E402

INITS = ["default", "kaiming-normal", "kaiming-uniform", "xavier-normal", "xavier-uniform"]


# ----------------------------------------------------------------------------- fields

def tancik(b: Bench) -> None:
    z = b.size
    img = resize(load_image("sample:astronaut"), z["tancik_px"])
    cfg = FieldConfig(encoding="gaussian", features=z["tancik_m"], sigma=10.0, depth=4, width=z["tancik_width"],
                      lr=1e-3, steps=z["tancik_steps"])
    warm = FieldConfig(**{**cfg.as_dict(), "steps": 20})
    fit_image(img, warm, [0], b.device, split="every-other")     # CUDA context, cuBLAS, allocator: untimed
    res = {"setup": f"{z['tancik_px']}² image, every-other pixels, 4 x {z['tancik_width']} ReLU, gaussian m "
                    f"{z['tancik_m']} σ 10, Adam 1e-3, {z['tancik_steps']} steps, seed 0"}
    rows = (("eager_fp32", False, False, "fp32"), ("graphs_fp32", True, False, "fp32"),    # (name, fast, tf32, precision)
            ("graphs_tf32", True, True, "fp32"), ("graphs_bf16", True, True, "bf16"), ("eager_tf32", False, True, "fp32"))
    train_pix, held_pix = (Pixels.of(*p) for p in split_pixels(img, "every-other"))
    for name, fast, t32, precision in rows:
        if name == "eager_tf32" and b.graphs_ok:
            continue                                 # only wanted when the graphs failed
        try:
            with tf32(t32):
                r, sec = b.timed(lambda: fit_image(img, replace(cfg, precision=precision), [0], b.device,
                                                   split="every-other", fast=fast))
        except Exception as exc:                     # a failed capture: recorded, the other rows go on
            b.graphs_ok = b.graphs_ok and not (fast and precision == "fp32")
            b.error(f"tancik {name}", exc)
            continue
        with tf32(False):                            # every row scored alike: fp32 renders
            psnr = [float(r.fields[0].score(p)[0]) for p in (train_pix, held_pix)]
        res[name] = {"seconds": r3(sec), "train_psnr": r3(psnr[0]), "heldout_psnr": r3(psnr[1]), "kind": "measured"}
        b.say(f"tancik {name}: {res[name]}")
    ref = res["eager_fp32"]
    for name in [n for n, *_ in rows[1:] if n in res]:
        res[name]["speedup"] = r3(ref["seconds"] / res[name]["seconds"])
        res[name]["heldout_psnr_diff_db"] = r3(res[name]["heldout_psnr"] - ref["heldout_psnr"])
        res[name]["train_psnr_diff_db"] = r3(res[name]["train_psnr"] - ref["train_psnr"])
    res["target"] = "<= 1.0 s on an H100-class card, held-out PSNR within 0.2 dB of eager fp32"
    b.out["tancik"] = res


def inr_init(b: Bench) -> None:
    z = b.size
    img = resize(load_image("sample:astronaut"), z["inr_px"])
    seeds = list(range(z["inr_seeds"]))

    def cfg(init, steps=z["inr_steps"]):
        return FieldConfig(depth=4, width=z["inr_width"], activation="relu", output="relu", encoding="none",
                           init=init, optimizer="adam", lr=1e-3, steps=steps)
    fit_image(img, cfg("default", 20), seeds, b.device)                       # warm-up, untimed
    fit_image(img, cfg("default", 20), [0], b.device)
    fast, total = {}, 0.0
    with tf32(True):
        for init in INITS:
            try:
                r, sec = b.timed(lambda: fit_image(img, cfg(init), seeds, b.device, fast=b.graphs_ok))
            except Exception as exc:                 # a failed capture: this and the rest batched, eagerly
                b.graphs_ok = False
                b.error(f"inr_init {init}", exc)
                r, sec = b.timed(lambda: fit_image(img, cfg(init), seeds, b.device))
            fast[init], total = r.train_psnr, total + sec
            b.say(f"inr-init fast {init}: {len(seeds)} fits in {sec:.2f} s")
    n_fits = len(INITS) * len(seeds)
    how = ("the steps eagerly (no CUDA)" if not b.cuda else "CUDA graphs (fast=True)" if b.graphs_ok
           else "eager (the graphs failed, see errors)")
    res = {"setup": f"{z['inr_px']} px, raw (x, y), 4 x {z['inr_width']} ReLU, ReLU output, Adam 1e-3, "
                    f"{z['inr_steps']} steps, {len(INITS)} initialisers x {len(seeds)} seeds",
           "fits": n_fits, "fast": {"seconds": r3(total), "kind": "measured",
                                    "how": f"one batched model per initialiser, {how}, TF32 allowed"}}
    timed, diffs = [], []
    for k in range(z["inr_ref_fits"]):
        init, seed = INITS[k % len(INITS)], seeds[k % len(seeds)]
        with tf32(False):
            r, sec = b.timed(lambda: fit_image(img, cfg(init), [seed], b.device))
        timed.append(sec)
        if r.train_psnr[0] is not None and fast[init][seed] is not None:
            diffs.append(fast[init][seed] - r.train_psnr[0])
    per_fit = statistics.fmean(timed)
    res["reference"] = {"seconds": r3(per_fit * n_fits), "seconds_per_fit": r3(per_fit),
                        "kind": f"extrapolated: {len(timed)} single fits (eager fp32) timed, x {n_fits}"}
    res["ratio"] = r3(per_fit * n_fits / total)
    res["psnr_fast_minus_single_db"] = [r3(d) for d in diffs]
    res["fast_seeds_below_15db"] = {i: sum(1 for v in fast[i] if v is None or v <= 15.0) for i in INITS}
    res["target"] = ">= 22x (<= 40 s)"
    b.say(f"inr-init: {total:.1f} s against {per_fit * n_fits:.0f} s (extrapolated): {res['ratio']}x")
    b.out["inr_init"] = res


PARTS = {"tancik": (tancik, 25), "inr_init": (inr_init, 45), "cls_check": (cls_check, 70),
         "cls": (cls_study, 60), "accuracy": (accuracy_check, 40)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="wall budget (s, from after the imports): parts shrink or are skipped to end in it")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    a = ap.parse_args(argv)
    unknown = set(a.parts.split(",")) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {', '.join(sorted(unknown))} (known: {', '.join(PARTS)})")
    b = Bench(a)
    if b.cuda:
        torch.backends.cudnn.benchmark = True
    b.say(f"torch {torch.__version__} on {b.out['device']}, budget {a.budget_s:.0f} s")
    for name in a.parts.split(","):
        fn, needs = PARTS[name]
        if not a.tiny and b.left() < needs:
            b.out["skipped"].append(f"{name} ({b.left():.0f} s left, needs about {needs} s)")
            b.say(f"skipped {name}: {b.left():.0f} s left")
            continue
        try:
            fn(b)
        except Exception as exc:
            b.error(name, exc)
        b.save()
    b.save()
    b.say(f"done: {a.out}")
    return b.out


if __name__ == "__main__":
    main()
