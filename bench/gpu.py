"""Every GPU measurement of issue 15, each against its plain reference in the same process, as ONE JSON file.

  tancik    the Tancik et al. 2D fit (512² image, the 256² every-other pixels, 4 x 256 ReLU, Gaussian m 256,
            σ 10, Adam 1e-3, 2000 steps): eager fp32 (``fit_image``) against the fast path (``fast=True``: CUDA
            graphs) in fp32, with TF32 matmuls, and with a bfloat16 forward (``fast="bf16"``); seconds and
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
  accuracy  (if time is left) one seed of cls-compare's CNN trained by the plain engine (``engine.train``,
            eager, fp32): its final test accuracy beside the fused seeds'.
Every figure carries ``kind``: "measured" or "extrapolated (how)". The JSON is rewritten after each part.
Usage: PYTHONUNBUFFERED=1 python bench/gpu.py --out gpu.json --budget-s 240     (CUDA; needs $L335Q_DATA)
       python bench/gpu.py --tiny --out tiny.json                              (tiny sizes, CPU: the test)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a plain checkout (no install)

from l335q.classify.engine import TrainConfig, train  # noqa: E402
from l335q.classify.fused import train_seeds  # noqa: E402
from l335q.classify.models import build_model  # noqa: E402
from l335q.data import fashion_mnist  # noqa: E402
from l335q.data.images import load_image, resize, split_pixels  # noqa: E402
from l335q.fields.engine import CHECK_EVERY, FieldConfig, fit_image  # noqa: E402
from l335q.fields.pixels import Pixels  # noqa: E402

STEPS_PER_GRAPH = 64
INITS = ["default", "kaiming-normal", "kaiming-uniform", "xavier-normal", "xavier-uniform"]
# (submission, model, lr, batch size): the cells the study's three submissions run
CELLS = [("cls-compare", "fcn", 1e-3, 64), ("cls-compare", "cnn", 1e-3, 64),
         ("cls-sweep lr", "cnn", 0.1, 64), ("cls-sweep lr", "cnn", 1e-3, 64), ("cls-sweep lr", "cnn", 1e-5, 64),
         ("cls-sweep batch", "cnn", 1e-3, 512), ("cls-sweep batch", "cnn", 1e-3, 64),
         ("cls-sweep batch", "cnn", 1e-3, 4)]
FULL = dict(tancik_px=512, tancik_width=256, tancik_m=256, tancik_steps=2000, inr_px=64, inr_seeds=100,
            inr_steps=1000, inr_width=256, inr_ref_fits=3, cls_train=None, cls_test=None, cls_epochs=10,
            cls_seeds=[0, 1, 2], ref_steps=300, ref_eval=6000)
TINY = dict(tancik_px=32, tancik_width=32, tancik_m=16, tancik_steps=40, inr_px=16, inr_seeds=2,
            inr_steps=20, inr_width=32, inr_ref_fits=1, cls_train=64, cls_test=32, cls_epochs=1,
            cls_seeds=[0, 1], ref_steps=3, ref_eval=32)


class Bench:
    def __init__(self, args):
        self.a, self.t0 = args, time.perf_counter()
        self.size = TINY if args.tiny else FULL
        self.device = args.device
        self.cuda = self.device.startswith("cuda")
        self.out = {"torch": torch.__version__, "python": sys.version.split()[0],
                    "device": torch.cuda.get_device_name() if self.cuda else "cpu", "tiny": args.tiny,
                    "budget_s": args.budget_s, "sizes": self.size, "skipped": [], "errors": {},
                    "how": {"cls_steps_per_graph": STEPS_PER_GRAPH, "fields_steps_per_graph": CHECK_EVERY,
                            "cudnn_benchmark": self.cuda, "tf32": "fast paths only: set_float32_matmul_precision"
                            "('high') and cudnn.allow_tf32; references: PyTorch's defaults (Quickstart) or fp32"}}
        self.graphs_ok = True        # False once a CUDA graph capture failed: later fast runs go eager

    def error(self, where: str, exc: BaseException) -> None:
        """Record a failure (the last lines of its traceback) and say it; the bench goes on."""
        self.out["errors"][where] = traceback.format_exc(limit=-3).splitlines()[-6:]
        self.say(f"ERROR in {where}: {type(exc).__name__}: {exc}")

    def left(self) -> float:
        return self.a.budget_s - (time.perf_counter() - self.t0)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def save(self) -> None:
        self.out["wall_s"] = round(time.perf_counter() - self.t0, 2)
        Path(self.a.out).write_text(json.dumps(self.out, indent=1))

    def say(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", flush=True)

    def timed(self, fn):
        self.sync()
        t = time.perf_counter()
        r = fn()
        self.sync()
        return r, time.perf_counter() - t


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 for matmuls and convolutions on (the fast paths) or off (true fp32: the references)."""
    old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


def r3(x):
    return None if x is None else round(float(x), 3)


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
    rows = (("eager_fp32", False, False), ("graphs_fp32", True, False), ("graphs_tf32", True, True),
            ("graphs_bf16", "bf16", True), ("eager_tf32", False, True))
    train_pix, held_pix = (Pixels.of(*p) for p in split_pixels(img, "every-other"))
    for name, fast, t32 in rows:
        if name == "eager_tf32" and b.graphs_ok:
            continue                                 # only wanted when the graphs failed
        try:
            with tf32(t32):
                r, sec = b.timed(lambda: fit_image(img, cfg, [0], b.device, split="every-other", fast=fast))
        except Exception as exc:                     # a failed capture: recorded, the other rows go on
            b.graphs_ok = b.graphs_ok and fast is not True
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
    how = "CUDA graphs (fast=True)" if b.graphs_ok else "eager (the graphs failed, see errors)"
    res = {"setup": f"{z['inr_px']} px, raw (x, y), 4 x {z['inr_width']} ReLU, ReLU output, Adam 1e-3, "
                    f"{z['inr_steps']} steps, {len(INITS)} initialisers x {len(seeds)} seeds",
           "fits": n_fits, "fast": {"seconds": r3(total), "kind": "measured",
                                    "how": f"one batched model per initialiser, {how}, TF32"}}
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


# ----------------------------------------------------------------------------- classification

def quickstart_sets(b: Bench):
    """torchvision's FashionMNIST with ToTensor (the Quickstart's datasets), cut to the bench's sizes."""
    from torch.utils.data import Subset
    from torchvision.datasets import FashionMNIST
    from torchvision.transforms import ToTensor

    fashion_mnist.load_raw()          # extracts the .gz files into the cache root torchvision reads
    root = str(fashion_mnist.data_home() / "fashion-mnist")
    train_set, test_set = (FashionMNIST(root, train=t, transform=ToTensor()) for t in (True, False))
    z = b.size
    if z["cls_train"]:
        train_set, test_set = Subset(train_set, range(z["cls_train"])), Subset(test_set, range(z["cls_test"]))
    return train_set, test_set


def reference_cell(b: Bench, sets, model_name: str, lr: float, batch: int) -> dict:
    """The Quickstart loop on one cell, timed on a slice: ``ref_steps`` training steps (after 3 untimed ones)
    and ``ref_eval`` images of accuracy passes, extrapolated to the cell's epochs and seeds."""
    from torch.utils.data import DataLoader

    train_set, test_set = sets
    z, dev = b.size, b.device
    model = build_model(model_name, seed=0).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def train_steps(k: int) -> None:
        model.train()
        for i, (x, y) in enumerate(DataLoader(train_set, batch_size=batch, shuffle=True)):
            if i == k:
                break
            x, y = x.to(dev), y.to(dev)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            if i % 100 == 0:
                loss.item()                          # the Quickstart prints the loss every 100 batches

    steps_per_epoch = -(-len(train_set) // batch)
    k = min(z["ref_steps"], steps_per_epoch)
    train_steps(3)
    _, t_train = b.timed(lambda: train_steps(k))
    n_eval = min(z["ref_eval"], len(train_set))

    def accuracy() -> None:
        model.eval()
        correct = 0
        with torch.no_grad():
            for i, (x, y) in enumerate(DataLoader(train_set, batch_size=batch)):
                if i * batch >= n_eval:
                    break
                correct += (model(x.to(dev)).argmax(1) == y.to(dev)).type(torch.float).sum().item()
    _, t_eval = b.timed(accuracy)
    evaluated = min(-(-n_eval // batch) * batch, len(train_set))
    per_epoch = t_train * steps_per_epoch / k + t_eval * (len(train_set) + len(test_set)) / evaluated
    n_runs = z["cls_epochs"] * len(z["cls_seeds"])
    return {"seconds": r3(per_epoch * n_runs), "seconds_per_epoch": r3(per_epoch),
            "kind": f"extrapolated: {k} of {steps_per_epoch} training steps and {evaluated} of "
                    f"{len(train_set) + len(test_set)} accuracy-pass images timed, x {n_runs} epochs (all seeds)"}


def fast_cell(b: Bench, data, model_name: str, lr: float, batch: int, reserve: float) -> dict:
    """The cell's seeds as one fused model (CUDA graphs, TF32); stops after a whole epoch when the next one
    would not fit in the budget (minus ``reserve``), and is then extrapolated."""
    z = b.size
    t0, done = time.perf_counter(), [0]

    def stop(epoch: int) -> bool:
        done[0] = epoch
        per = (time.perf_counter() - t0) / epoch
        return b.left() - reserve < per
    cfg = TrainConfig(epochs=z["cls_epochs"], batch_size=batch, lr=lr, device=b.device)
    with tf32(True):
        try:
            hs, sec = b.timed(lambda: train_seeds(model_name, data, cfg, z["cls_seeds"], stop=stop,
                                                  graphs=None if b.graphs_ok else False,
                                                  steps_per_graph=STEPS_PER_GRAPH))
        except Exception as exc:                     # a failed capture: this cell and the rest without graphs
            if not b.graphs_ok:
                raise
            b.graphs_ok = False
            b.error(f"cls {model_name} lr {lr:g} batch {batch}", exc)
            t0, done[0] = time.perf_counter(), 0
            hs, sec = b.timed(lambda: train_seeds(model_name, data, cfg, z["cls_seeds"], graphs=False, stop=stop))
    ran, epochs = done[0], z["cls_epochs"]
    accs = [h.final.test_acc for h in hs if h.final is not None and not h.diverged]
    if ran == epochs or all(h.diverged for h in hs):     # done, or every seed diverged (training ends there)
        seconds, kind = sec, "measured" + ("" if ran == epochs else f": every seed diverged by epoch {ran}")
    else:
        seconds, kind = sec * epochs / ran, f"extrapolated from {ran} of {epochs} epochs"
    out = {"seconds": r3(seconds), "epochs_run": ran, "seconds_measured": r3(sec), "kind": kind,
           "graphs": b.cuda and b.graphs_ok,
           "test_acc": [r3(h.final.test_acc) if h.final else None for h in hs],
           "train_acc": [r3(h.final.train_acc) if h.final else None for h in hs],
           "diverged": [h.diverged_at for h in hs],
           "test_acc_mean": r3(statistics.fmean(accs)) if accs else None}
    return out


def load_cls_data(b: Bench):
    d = fashion_mnist.load(b.device)
    z = b.size
    if not z["cls_train"]:
        return d
    return SimpleNamespace(x_train=d.x_train[:z["cls_train"]], y_train=d.y_train[:z["cls_train"]],
                           x_test=d.x_test[:z["cls_test"]], y_test=d.y_test[:z["cls_test"]])


def cls_study(b: Bench) -> None:
    data, sets = load_cls_data(b), quickstart_sets(b)
    with tf32(True):                                # warm-up: CUDA context, cuDNN, cuBLAS (untimed)
        warm = SimpleNamespace(x_train=data.x_train[:512], y_train=data.y_train[:512], x_test=data.x_test[:512],
                               y_test=data.y_test[:512])
        for name in ("fcn", "cnn"):
            try:
                train_seeds(name, warm, TrainConfig(epochs=1, batch_size=64, device=b.device), b.size["cls_seeds"],
                            graphs=None if b.graphs_ok else False)
            except Exception as exc:                 # a failed capture: the study runs without graphs
                b.graphs_ok = False
                b.error(f"cls warm-up {name}", exc)
    res = {"cells": [],
           "target": ">= 38x faster (<= 45 s on an H100-class card), the same accuracies within seed noise"}
    b.out["cls"] = res
    order = sorted(range(len(CELLS)), key=lambda i: CELLS[i][3] == 4)       # the batch-4 cell last
    for n, i in enumerate(order):
        sub, name, lr, batch = CELLS[i]
        cell = {"submission": sub, "model": name, "lr": lr, "batch_size": batch, "seeds": b.size["cls_seeds"],
                "epochs": b.size["cls_epochs"]}
        cell["reference"] = reference_cell(b, sets, name, lr, batch)
        b.save()
        cell["fast"] = fast_cell(b, data, name, lr, batch, reserve=3.0 * (len(order) - n - 1) + 2.0)
        cell["ratio"] = r3(cell["reference"]["seconds"] / cell["fast"]["seconds"])
        res["cells"].append(cell)
        b.say(f"cls {sub} {name} lr {lr:g} batch {batch}: fast {cell['fast']['seconds']} s "
              f"({cell['fast']['kind']}), reference {cell['reference']['seconds']} s (extrapolated), "
              f"{cell['ratio']}x; test acc {cell['fast']['test_acc']}")
        b.save()
    fast = sum(c["fast"]["seconds"] for c in res["cells"])
    ref = sum(c["reference"]["seconds"] for c in res["cells"])
    all_measured = all(c["fast"]["kind"] == "measured" for c in res["cells"])
    res.update(fast_seconds=r3(fast), fast_kind="measured" if all_measured else "partly extrapolated (see cells)",
               reference_seconds=r3(ref), reference_kind="extrapolated from timed slices (see cells)",
               ratio=r3(ref / fast))
    b.say(f"cls study: fast {fast:.1f} s, reference {ref:.0f} s: {ref / fast:.1f}x")


def accuracy_check(b: Bench) -> None:
    """One seed of the CNN at lr 1e-3, batch 64 by the plain engine (eager fp32) beside the fused seeds."""
    data = load_cls_data(b)
    z = b.size
    h, sec = b.timed(lambda: train(build_model("cnn", seed=0), data,
                                   TrainConfig(epochs=z["cls_epochs"], batch_size=64, seed=0, device=b.device),
                                   log_fn=lambda s: None))
    fused = next((c["fast"] for c in b.out.get("cls", {}).get("cells", [])
                  if (c["model"], c["lr"], c["batch_size"]) == ("cnn", 1e-3, 64)), None)
    b.out["accuracy"] = {"plain_engine_seed0": {"test_acc": r3(h.final.test_acc), "train_acc": r3(h.final.train_acc),
                                                "seconds": r3(sec), "kind": "measured"},
                         "fused_test_acc": fused and fused["test_acc"],
                         "note": "dropout masks differ between the two paths: equal only within seed noise"}
    b.say(f"accuracy: plain engine seed 0 {h.final.test_acc:.4f}; fused {fused and fused['test_acc']}")


PARTS = {"tancik": (tancik, 25), "inr_init": (inr_init, 45), "cls": (cls_study, 60), "accuracy": (accuracy_check, 40)}


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
