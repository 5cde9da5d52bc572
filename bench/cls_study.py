"""Classification speed and accuracy: l335q's engine against the plain Quickstart way, side by side.

  reference  the PyTorch Quickstart loop: torchvision FashionMNIST + ToTensor, DataLoader(shuffle=True),
             a train pass, then train- and test-accuracy passes through DataLoaders (as a study needs)
  l335q      classify.engine.train: data held on the device, a seeded permutation per epoch, the same passes

Prints seconds per epoch for both, the ratio, and (with --epochs) the mean ± sd test accuracy of the FCN
and the default CNN over --seeds, the number the README quotes.
Usage: python bench/cls_study.py [--device cuda] [--seeds 0,1,2] [--epochs 10] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from l335q.classify.engine import TrainConfig, train
from l335q.classify.models import build_model
from l335q.config import data_home
from l335q.data import fashion_mnist


def reference_epoch(model_name: str, device: str, batch_size: int, subset: int | None) -> float:
    """Seconds for one Quickstart-style epoch: train pass + train/test accuracy passes via DataLoaders."""
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import FashionMNIST
    from torchvision.transforms import ToTensor

    fashion_mnist.load_raw()      # makes sure the extracted files exist under the cache root
    root = str(data_home() / "fashion-mnist")
    train_set = FashionMNIST(root, train=True, transform=ToTensor())
    test_set = FashionMNIST(root, train=False, transform=ToTensor())
    if subset:
        train_set = Subset(train_set, range(subset))
    model = build_model(model_name, seed=0).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    model.train()
    for x, y in DataLoader(train_set, batch_size=batch_size, shuffle=True):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for ds in (train_set, test_set):
            correct = 0
            for x, y in DataLoader(ds, batch_size=batch_size):
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    sync()
    return time.perf_counter() - t0


def engine_run(model_name: str, device: str, batch_size: int, epochs: int, seed: int, subset: int | None):
    data = fashion_mnist.load(device, subset)
    model = build_model(model_name, seed=seed)
    hist = train(model, data, TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, device=device),
                 log_fn=lambda s: None)
    return hist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=0, help="full study epochs (0: timing only)")
    ap.add_argument("--batch-sizes", default="64")
    ap.add_argument("--subset", type=int, default=None, help="first N training images (CPU runs)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    out = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "subset": a.subset, "timing": [], "study": []}
    fashion_mnist.load(a.device, a.subset)   # load once, outside the timings
    for model_name in ("fcn", "cnn"):
        for bs in (int(b) for b in a.batch_sizes.split(",")):
            engine_run(model_name, a.device, bs, 1, 0, min(a.subset or 4096, 4096))   # warm-up
            ref = reference_epoch(model_name, a.device, bs, a.subset)
            ours = engine_run(model_name, a.device, bs, 1, 0, a.subset).epochs[0].seconds
            row = {"model": model_name, "batch_size": bs, "reference_s": round(ref, 3), "l335q_s": round(ours, 3),
                   "speedup": round(ref / ours, 2)}
            out["timing"].append(row)
            print(json.dumps(row), flush=True)
    if a.epochs:
        for model_name in ("fcn", "cnn"):
            accs, times = [], []
            for seed in seeds:
                hist = engine_run(model_name, a.device, 64, a.epochs, seed, a.subset)
                accs.append(hist.final.test_acc)
                times.append(sum(e.seconds for e in hist.epochs))
            row = {"model": model_name, "epochs": a.epochs, "seeds": len(seeds),
                   "test_acc_mean": round(statistics.fmean(accs), 4),
                   "test_acc_sd": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                   "test_accs": [round(x, 4) for x in accs], "seconds_per_run": round(statistics.fmean(times), 1)}
            out["study"].append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
