"""The classification parts of ``bench/gpu.py``: the whole study (fused fast path against the Quickstart loop),
the fused path against the plain engine on the device, and a plain-engine accuracy beside the fused seeds'."""
from __future__ import annotations

import statistics
import time
from types import SimpleNamespace

import torch
from gpu_common import STEPS_PER_GRAPH, Bench, r3, tf32

from l335q.classify.engine import TrainConfig, train
from l335q.classify.fused import train_seeds
from l335q.classify.models import CNNConfig, build_model
from l335q.data import fashion_mnist

CELLS = [("cls-compare", "fcn", 1e-3, 64), ("cls-compare", "cnn", 1e-3, 64),
         ("cls-sweep lr", "cnn", 0.1, 64), ("cls-sweep lr", "cnn", 1e-3, 64), ("cls-sweep lr", "cnn", 1e-5, 64),
         ("cls-sweep batch", "cnn", 1e-3, 512), ("cls-sweep batch", "cnn", 1e-3, 64),
         ("cls-sweep batch", "cnn", 1e-3, 4)]


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


def cls_check(b: Bench) -> None:
    """The fused, graphed path against the plain engine on this device, fp32, seed by seed: the FCN with Adam and
    the CNN with SGD-momentum (under Adam the CNN's conv biases before BatchNorm follow rounding noise), one epoch
    on the first ``check_train`` images; the largest differences of the per-epoch numbers."""
    d, z = load_cls_data(b), b.size
    n = z["check_train"]
    data = SimpleNamespace(x_train=d.x_train[:n], y_train=d.y_train[:n], x_test=d.x_test, y_test=d.y_test)
    out = {}
    with tf32(False):
        for name, opt, lr in (("fcn", "adam", 1e-3), ("cnn", "sgd-momentum", 0.01)):
            cnn = None if name == "fcn" else CNNConfig(dropout=0.0)
            cfg = TrainConfig(epochs=1, batch_size=64, lr=lr, optimizer=opt, device=b.device)
            fused = train_seeds(name, data, cfg, [0, 1], cnn_config=cnn, graphs=None if b.graphs_ok else False,
                                steps_per_graph=STEPS_PER_GRAPH)
            plain = [train(build_model(name, cnn, seed=s), data, TrainConfig(**{**cfg.__dict__, "seed": s}),
                           log_fn=lambda _: None) for s in (0, 1)]
            diff = {k: max(abs(getattr(f.epochs[0], k) - getattr(p.epochs[0], k)) for f, p in zip(fused, plain))
                    for k in ("train_acc", "test_acc", "train_loss", "test_loss")}
            out[f"{name}_{opt}"] = {"max_abs_diff": {k: float(f"{v:.3g}") for k, v in diff.items()},
                                    "fused_graphs": b.cuda and b.graphs_ok, "kind": "measured"}
            b.say(f"cls check {name} {opt}: {out[f'{name}_{opt}']}")
    b.out["cls_check"] = out
