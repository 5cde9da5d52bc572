"""Automatic σ against the best σ of a grid, per image (held-out PSNR, every-other split).

  python research/autosigma.py --resolution 64 --steps 300 --depth 3 --width 128 --features 128 \\
      --images sky,grass,astronaut,camera --device cpu
Prints one JSON line per image: the grid's best σ and held-out PSNR, the automatic σ, its held-out PSNR
and the loss in dB (positive: auto is worse) with its standard error over the seeds, the time the
automatic choice took, every trial's validation PSNR, and with --scales the loss of the automatic σ
times each factor (to check the choice's bias); then a table of them (``--report rows.jsonl`` prints that table again from a saved file).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from autosigma_study import field_args, field_config, study_image
from l335q.fields.autosigma import Search, auto_sigma
from l335q.fields.engine import fit_image
from l335q.results import gap_se

p = argparse.ArgumentParser()
p.add_argument("--images", default="sky,grass,astronaut,camera", help="sample names or image file paths")
field_args(p, resolution=64, kmax=None, width=128, seeds=2)
p.add_argument("--trial-steps", type=int, default=None)
p.add_argument("--sigmas", default="0.5,0.75,1,1.5,2,3,5,7,10,15,20,30,50")
p.add_argument("--tol", type=float, default=Search.tol_db, help="auto σ: the largest σ within this many dB of the best")
p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
p.add_argument("--scales", default="1", help="also score auto σ times these factors (bias check), e.g. 1,1.19,1.41")
p.add_argument("--jsonl", default=None, help="append each image's row to this file")
p.add_argument("--report", default=None, help="only print the table of the rows in this .jsonl file")
a = p.parse_args()


def report(rows: list[dict], target: float = 0.3) -> None:
    """One line per image, then how many land within ``target`` dB of the grid's best."""
    print(f"{'image':22s} {'best σ':>7s} {'best dB':>8s} {'auto σ':>7s} {'auto dB':>8s} {'loss dB':>8s} {'± se':>5s} {'auto s':>7s}")
    for r in rows:
        se = f"{r['loss_se_db']:5.2f}" if "loss_se_db" in r else f"{'':5s}"   # rows saved before se was recorded
        print(f"{os.path.basename(r['image']):22s} {r['best_sigma']:7.3g} {r['best_psnr']:8.2f} {r['auto_sigma']:7.3g} "
              f"{r['auto_psnr']:8.2f} {r['loss_db']:8.2f} {se} {r['auto_seconds']:7.1f}" + ("" if r["loss_db"] <= target else "  > target"))
    worst = max(rows, key=lambda r: r["loss_db"])
    print(f"within {target:g} dB of the grid's best: {sum(r['loss_db'] <= target for r in rows)} of {len(rows)} images; "
          f"worst {worst['loss_db']:.2f} dB ({os.path.basename(worst['image'])}); mean loss {np.mean([r['loss_db'] for r in rows]):.2f} dB")


if a.report:
    report([json.loads(line) for line in open(a.report)])
    raise SystemExit(0)
torch.set_num_threads(a.threads)
cfg = field_config(a)
seeds = list(range(a.seeds))
out = []
for name in a.images.split(","):
    img = study_image(name, a.resolution)
    grid = {}
    for s in map(float, a.sigmas.split(",")):
        cfg.sigma = s
        grid[s] = fit_image(img, cfg, seeds, a.device, split="every-other").heldout_psnr
    t0 = time.perf_counter()
    choice = auto_sigma(img, cfg, "every-other", seed=seeds[0], device=a.device,
                        search=Search(steps=a.trial_steps, tol_db=a.tol))
    t_auto = time.perf_counter() - t0
    scaled = {}
    for c in map(float, a.scales.split(",")):
        cfg.sigma = choice.sigma * c
        scaled[c] = fit_image(img, cfg, seeds, a.device, split="every-other").heldout_psnr
    mean = {s: float(np.mean(v)) for s, v in grid.items()}
    best = max(mean, key=mean.get)
    auto = float(np.mean(scaled[1.0]))
    row = {"image": name, "best_sigma": best, "best_psnr": round(mean[best], 2), "auto_sigma": choice.sigma,
           "auto_psnr": round(auto, 2), "loss_db": round(mean[best] - auto, 2), "auto_seconds": round(t_auto, 1),
           "loss_se_db": round(gap_se(np.std(grid[best], ddof=1), len(seeds), np.std(scaled[1.0], ddof=1), len(seeds)), 2),
           "trials": len(choice.trials), "grid": {k: round(v, 2) for k, v in mean.items()},
           "seeds_best": [round(v, 2) for v in grid[best]], "seeds_auto": [round(v, 2) for v in scaled[1.0]],
           "scaled_loss_db": {c: round(mean[best] - float(np.mean(v)), 2) for c, v in scaled.items()},
           "validation": {k: (None if v is None else round(v, 2)) for k, v in choice.trials}}
    out.append(row)
    print(json.dumps(row), flush=True)
    if a.jsonl:
        with open(a.jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
print(f"resolution {a.resolution}, steps {a.steps}, {a.depth}x{a.width}, m={a.features}, seeds {a.seeds}, "
      f"device {a.device}, σ grid {a.sigmas}")
report(out)
