"""When does the automatic σ choice settle during training, and what does a cheaper search lose?

  python research/autosigma_settle.py record --images sky,grass --resolution 48 \\
      --out research/results/autosigma-settle-48.jsonl
  python research/autosigma_settle.py analyse research/results/autosigma-settle-48.jsonl \\
      --study research/results/autosigma-study-48-all.jsonl

``record``: per image, every σ of autosigma's lattice (0.25·2^(k/4) up to its cap) × both checkerboard
folds as one batched model (``autosigma.validation_fits``, seed 0, the study's 3×96 MLP, m = 96, 300 steps),
the validation PSNR of every member every ``--every`` steps; one JSON line per image.
``analyse``: replays cheaper searches on those curves (fewer steps, a stop rule, a coarser σ lattice, one
fold) and compares each one's σ with the full search's (the rule as it was before the batched search), and,
where a study file holds held-out PSNRs for the image (4 seeds, ``autosigma_study.py``), the held-out loss
against the spec grid's best; plus each search's cost in member-steps against one full fit.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from autosigma_study import by_image, field_args, field_config, grid_best, grid_value, held_curve, study_image


def record(a) -> None:
    import torch

    from l335q.data.images import split_pixels
    from l335q.fields.autosigma import Search, cap, sigma_lattice, validation_fits

    torch.set_num_threads(a.threads)
    cfg = field_config(a)
    done = {json.loads(line)["image"] for line in open(a.out)} if os.path.exists(a.out) else set()
    for name in a.images.split(","):
        if name in done:
            continue
        (coords, rgb), _ = split_pixels(study_image(name, a.resolution), "every-other")
        sigmas = [float(f"{s:.6g}") for s in sigma_lattice(Search.lo, cap(coords), Search.ratio)]
        steps, val = [], []

        def keep(step, scores):
            steps.append(step)
            val.append([round(float(v), 4) for v in scores["val"]])
            return ()

        t0 = time.perf_counter()
        result = validation_fits(coords, rgb, cfg, sigmas, 0, "cpu", 2, until=(a.every, keep))
        steps.append(a.steps)
        val.append([None if v is None else round(v, 4) for v in result.eval_psnr["val"]])
        row = {"image": name, "resolution": a.resolution, "sigmas": sigmas, "folds": 2, "steps": steps, "val": val,
               "seconds": round(time.perf_counter() - t0, 1)}
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(name, a.resolution, row["seconds"], "s", flush=True)


# ----------------------------------------------------------------------------- replaying cheaper searches

def curve_at(row, k: int, sigmas: list[float], folds: tuple[int, ...]) -> dict[float, float]:
    """σ -> validation PSNR at the k-th recorded step, mean over ``folds``."""
    idx = {s: i for i, s in enumerate(row["sigmas"])}
    out = {}
    for s in sigmas:
        vals = [row["val"][k][2 * idx[s] + f] for f in folds]
        out[s] = -math.inf if None in vals else float(np.mean(vals))
    return out


def replay(row, search: dict) -> tuple[float, int]:
    """(chosen σ, member-steps spent) of one search on a recorded image.

    search: sub (every sub-th lattice σ from the top... see ``sub_lattice``), folds, steps (the most steps),
    settle (stop once the choice and the best validation PSNR are unchanged over this many recorded checks;
    0: never stop early), tol (the rule's tolerance in dB)."""
    from l335q.fields.autosigma import pick_sigma

    sigmas = sub_lattice(row["sigmas"], search["sub"])
    folds = tuple(range(search["folds"]))
    last = max(k for k, st in enumerate(row["steps"]) if st <= search["steps"])
    history = []
    for k in range(last + 1):
        curve = curve_at(row, k, sigmas, folds)
        choice = pick_sigma(curve.__getitem__, sigmas, search["tol"])[0]
        history.append((choice, max(curve.values())))
        w = search["settle"]
        if w and len(history) > w and all(h[0] == choice for h in history[-w - 1:]) \
                and abs(history[-w - 1][1] - history[-1][1]) < search.get("eps", 0.1):
            break
    return choice, row["steps"][k] * len(sigmas) * len(folds)


def sub_lattice(sigmas: list[float], sub: int) -> list[float]:
    """Every sub-th σ of the lattice, counted from 1 (σ = 1 is on every sub-lattice of a 2^(1/4) lattice)."""
    one = min(range(len(sigmas)), key=lambda i: abs(math.log(sigmas[i])))
    return [s for i, s in enumerate(sigmas) if (i - one) % sub == 0]


SEARCHES = {
    "full (before)": {"sub": 1, "folds": 2, "steps": 300, "settle": 0, "tol": 0.4},
}
for _sub in (1, 2, 4):
    for _folds in (1, 2):
        for _steps in (50, 100, 150, 200, 300):
            SEARCHES[f"1/{_sub} lattice, {_folds} fold, {_steps} steps"] = \
                {"sub": _sub, "folds": _folds, "steps": _steps, "settle": 0, "tol": 0.4}
        for _w in (2, 3, 5):
            SEARCHES[f"1/{_sub} lattice, {_folds} fold, settle {_w}"] = \
                {"sub": _sub, "folds": _folds, "steps": 300, "settle": _w, "tol": 0.4}


def analyse(a) -> None:
    rows = [json.loads(line) for path in a.files for line in open(path)]
    held = {}
    for path in a.study or []:
        held.update({(os.path.basename(k[0]), k[1]): held_curve(rs) for k, rs in by_image(path).items()})
    full_cost = a.steps * 2            # one full fit: all training pixels = two members' worth, for `steps`
    print(f"{len(rows)} image/resolution cases; cost in member-steps / one full fit ({a.steps} steps on all "
          f"training pixels); 'same': σ equal to the full search's; 'loss': held-out dB below the spec grid's best "
          f"(4-seed study curves, {sum((os.path.basename(r['image']), r['resolution']) in held for r in rows)} cases)")
    print(f"{'search':38s} {'cost':>5s} {'same':>6s} {'<=1 step':>8s} {'ok0.3':>6s} {'worst':>6s} {'mean':>6s}")
    ref = {(r["image"], r["resolution"]): replay(r, SEARCHES["full (before)"])[0] for r in rows}
    for name, search in SEARCHES.items():
        costs, same, near, losses = [], 0, 0, []
        for r in rows:
            sigma, cost = replay(r, search)
            costs.append(cost / full_cost)
            full = ref[(r["image"], r["resolution"])]
            same += sigma == full
            near += abs(math.log(sigma / full)) <= math.log(2) / 4 + 1e-6
            h = held.get((os.path.basename(r["image"]), r["resolution"]))
            if h and min(h) <= sigma <= max(h):
                losses.append(grid_best(h) - grid_value(h, sigma))
        loss_txt = (f"{sum(x <= 0.3 for x in losses):3d}/{len(losses):<2d} {max(losses):6.2f} {np.mean(losses):6.2f}"
                    if losses else "")
        print(f"{name:38s} {np.mean(costs):5.2f} {same:3d}/{len(rows):<2d} {near:5d}/{len(rows):<2d} {loss_txt}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--images", default="sky,grass,astronaut,coffee")
    field_args(r, resolution=48, kmax=None)
    r.add_argument("--every", type=int, default=10, help="record the validation PSNRs every this many steps")
    r.add_argument("--out", required=True)
    an = sub.add_parser("analyse")
    an.add_argument("files", nargs="+")
    an.add_argument("--study", nargs="*", help="autosigma_study.py files with the held-out curves")
    an.add_argument("--steps", type=int, default=300, help="steps of the full fit the cost is measured against")
    a = p.parse_args()
    record(a) if a.cmd == "record" else analyse(a)
