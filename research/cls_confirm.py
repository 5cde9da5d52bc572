"""Confirm CNN designs at the practical's full recipe: full Fashion-MNIST, 10 epochs, batch 64, Adam 1e-3.

  python research/cls_confirm.py --designs default,c64-128-256,... --seeds 0-4 --device cuda --procs 8 \\
      --out research/results/cls-confirm-gpu.jsonl
  python research/cls_confirm.py --report research/results/cls-confirm-gpu.jsonl

Each design × seed is one training through the product's engine (``classify.engine.train``, the model built by
``classify.models.build_model('cnn', cfg, seed=)``), exactly what a cls-compare job runs for its CNN; the
runs are spread over ``--procs`` processes (on a GPU they share the card). One JSON line per run: the design,
its parameters, and train/test accuracy per epoch. ``--report`` prints mean ± sd of the final test accuracy
per design and whether it reaches the issue's mark, computed from the lines.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

MARK = 0.925

# name -> CNNConfig fields over BASE (the CNN before this study: 32-64-128, 3x3 same, BatchNorm, a 2x2 max-pool
# after every conv, dropout 0.3); ``hidden`` is solved for the FCN's budget (classify.models.hidden_for_budget)
BASE = {"channels": (32, 64, 128), "kernels": (3, 3, 3), "same_padding": True, "pools": (2, 2, 2),
        "batchnorm": True, "dropout": 0.3}
CANDIDATES = {
    "c32-64-128": {},
    "c64-128-256": {"channels": (64, 128, 256)},
    "c48-96-192": {"channels": (48, 96, 192)},
    "c64-128-128": {"channels": (64, 128, 128)},
    "c64-64-128": {"channels": (64, 64, 128)},
    "c32-64-128-p122": {"pools": (1, 2, 2)},
    "c32-64-128-k533": {"kernels": (5, 3, 3)},
    "c64-128-256-d0.4": {"channels": (64, 128, 256), "dropout": 0.4},
    "c48-96-192-d0.4": {"channels": (48, 96, 192), "dropout": 0.4},
    "c32-64-128-d0.4": {"dropout": 0.4},
    "c32-64-128-d0.5": {"dropout": 0.5},
}


def config_of(name: str):
    from dataclasses import replace

    from l335q.classify.models import CNNConfig, hidden_for_budget

    cfg = CNNConfig(**{**BASE, **CANDIDATES[name]})
    return replace(cfg, hidden=hidden_for_budget(cfg))


def one_run(job: tuple[str, int, str, int, int | None]) -> dict:
    name, seed, device, epochs, train_subset = job
    import torch

    from l335q.classify.engine import TrainConfig, train
    from l335q.classify.models import build_model, count_params
    from l335q.data.fashion_mnist import load

    torch.set_num_threads(1)
    cfg = config_of(name)
    data = load(device, train_subset=train_subset)
    model = build_model("cnn", cfg, seed=seed)
    t0 = time.perf_counter()
    hist = train(model, data, TrainConfig(epochs=epochs, batch_size=64, lr=1e-3, optimizer="adam", seed=seed,
                                          device=device), log_fn=lambda s: None)
    return {"design": name, "config": cfg.to_dict(), "describe": cfg.describe(), "params": count_params(model),
            "seed": seed, "device": device, "epochs": epochs, "train_subset": train_subset,
            "seconds": round(time.perf_counter() - t0, 2), "diverged_at": hist.diverged_at,
            "test_acc": [e.test_acc for e in hist.epochs], "train_acc": [e.train_acc for e in hist.epochs]}


def report(rows: list[dict]) -> None:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["design"], []).append(r)
    out = []
    for name, rs in by.items():
        final = [r["test_acc"][-1] for r in rs]
        sd = statistics.stdev(final) if len(final) > 1 else 0.0
        out.append((statistics.mean(final), sd, name, rs))
    out.sort(reverse=True)
    print(f"{'design':22s} {'params':>8s} {'seeds':>5s} {'test mean':>9s} {'sd':>6s} {'train':>6s} {'s/run':>6s}  mark")
    for mean, sd, name, rs in out:
        train = statistics.mean(r["train_acc"][-1] for r in rs)
        secs = statistics.mean(r["seconds"] for r in rs)
        print(f"{name:22s} {rs[0]['params']:8,d} {len(rs):5d} {mean:9.4f} {sd:6.4f} {train:6.4f} {secs:6.1f}  "
              f"{'reaches' if mean >= MARK else 'misses'} {MARK:.1%}")
    best = out[0]
    print(f"best: {best[2]} ({best[3][0]['describe']}), {best[0]:.2%} ± {best[1]:.2%} over {len(best[3])} seeds")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--designs", default=",".join(CANDIDATES))
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--device", default="cpu")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--report", nargs="*", default=None)
    a = p.parse_args()
    if a.report is not None:
        report([json.loads(line) for path in a.report for line in open(path)])
        return
    from l335q.specs import parse_seeds

    # --designs NAME[:SEEDS],...: a design's own seeds where given, else --seeds
    jobs = []
    for item in a.designs.split(","):
        name, _, seeds = item.partition(":")
        jobs += [(name, s, a.device, a.epochs, a.train_subset) for s in parse_seeds(seeds or a.seeds)]
    t0, rows = time.perf_counter(), []
    with mp.get_context("spawn").Pool(a.procs) as pool:
        for row in pool.imap_unordered(one_run, jobs):
            rows.append(row)
            print(f"[{time.perf_counter() - t0:6.1f} s] {row['design']} seed {row['seed']}: "
                  f"test {row['test_acc'][-1]:.4f} ({row['seconds']} s)", flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    report(rows)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main()
