"""When does the automatic σ choice settle during training, and what does a cheaper search lose?

  python research/autosigma_settle.py record --images sky,grass --resolution 48 \\
      --out research/results/autosigma-settle-48.jsonl
  python research/autosigma_settle.py analyse research/results/autosigma-settle-48.jsonl \\
      --study research/results/autosigma-study-48-all.jsonl

``record``: per image, every σ of autosigma's lattice (0.25·2^(k/4) up to its cap) × both checkerboard
folds as one batched model (``autosigma.validation_fits``, seed 0, the study's 3×96 MLP, m = 96, 300 steps),
the validation PSNR of every member every ``--every`` steps; one JSON line per image.
``analyse``: replays searches on those curves through autosigma's own stop rule and choice (the shipped
``Search()``, the ``PREVIOUS`` one, and the shipped one with one setting changed), compares each one's σ with
the previous search's and, where a study file holds held-out PSNRs for the image (4 seeds,
``autosigma_study.py``), scores it against the spec grid's best; plus its cost in member-steps.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from autosigma_study import SPEC_GRID, by_image, field_args, field_config, grid_best, grid_value, held_curve, study_image


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

        def keep(step, scores, first):
            steps.append(step)
            val.append([round(float(v), 4) for v in scores["val"]])
            return ()

        t0 = time.perf_counter()
        result = validation_fits(coords, rgb, cfg, sigmas, 0, a.device, 2, until=(a.every, keep))
        steps.append(a.steps)
        val.append([None if v is None else round(v, 4) for v in result.eval_psnr["val"]])
        row = {"image": name, "resolution": a.resolution, "sigmas": sigmas, "folds": 2, "steps": steps, "val": val,
               "seconds": round(time.perf_counter() - t0, 1)}
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(name, a.resolution, row["seconds"], "s", flush=True)


# ----------------------------------------------------------------------------- replaying searches

def replay(row, search, steps: int = 300) -> tuple[float, float, list[int]]:
    """(chosen σ, member-steps spent, steps per σ) of ``search`` (an autosigma.Search) replayed on a recorded
    image through autosigma's own stop rule (``settling``) and choice (``pick_sigma``). Its σ lattice must lie
    on the recorded one and its looks on the recorded steps."""
    from l335q.fields.autosigma import pick_sigma, settling, sigma_lattice

    wanted = [float(f"{x:.6g}") for x in sigma_lattice(search.lo, row["sigmas"][-1] * (1 + 1e-6), search.ratio)]
    idx = [min(range(len(row["sigmas"])), key=lambda i: abs(math.log(row["sigmas"][i] / w))) for w in wanted]
    assert all(abs(row["sigmas"][i] / w - 1) < 1e-4 for i, w in zip(idx, wanted)), (wanted, row["sigmas"])
    folds = min(2, search.folds)
    members = [2 * i + f for i in idx for f in range(folds)]
    every, fn = settling(search, steps, len(members))
    at = {st: k for k, st in enumerate(row["steps"])}
    value, stopped, alive = [None] * len(members), [steps] * len(members), set(range(len(members)))
    for step in range(every, steps, every):
        now = [row["val"][at[step]][m] for m in members]
        shown = np.array([v if i in alive else value[i] for i, v in enumerate(now)], dtype=float)
        for i in fn(step, {"val": shown}, 0):
            value[i], stopped[i] = now[i], step
            alive.discard(i)
        if not alive:
            break
    for i in alive:
        value[i] = row["val"][at[steps]][members[i]]
    per = [np.mean(value[k * folds:(k + 1) * folds]) for k in range(len(idx))]
    sig = [row["sigmas"][i] for i in idx]
    chosen = pick_sigma(dict(zip(sig, per)).__getitem__, sig, search.tol_db)[0]
    spent = sum(stopped)
    return chosen, spent, [max(stopped[k * folds:(k + 1) * folds]) for k in range(len(idx))]


def searches() -> dict:
    """The shipped search, the previous one, and variants of the shipped one (one setting changed each)."""
    from dataclasses import replace

    from l335q.fields.autosigma import PREVIOUS, Search

    shipped = Search()
    return {"previous": PREVIOUS, "shipped": shipped, "budget 4": replace(shipped, budget=4.0),
            "budget 2": replace(shipped, budget=2.0), "no budget": replace(shipped, budget=0.0),
            "never settles": replace(shipped, settle_db=0.0), "2 folds": replace(shipped, folds=2),
            "2 folds, budget 6": replace(shipped, folds=2, budget=6.0),
            "half-octave lattice": replace(shipped, ratio=2 ** 0.5),
            "tolerance 0.3": replace(shipped, tol_db=0.3), "tolerance 0.5": replace(shipped, tol_db=0.5)}


def analyse(a) -> None:
    from l335q.results import gap_se

    rows = [json.loads(line) for path in a.files for line in open(path)]
    held, sds = {}, {}
    for path in a.study or []:
        for k, rs in by_image(path).items():
            held[(os.path.basename(k[0]), k[1])] = held_curve(rs)
            sds[(os.path.basename(k[0]), k[1])] = {r["sigma"]: (float(np.std(r["heldout"], ddof=1)), len(r["heldout"]))
                                                   for r in rs}

    def meets(k, sigma: float) -> bool:
        """Within 0.3 dB of the spec grid's best, or within two standard errors of seed noise of it."""
        h, sd = held[k], sds[k]
        best = max((g for g in SPEC_GRID if g <= max(h)), key=lambda g: grid_value(h, g))
        near = lambda x: sd[min(sd, key=lambda t: abs(math.log(t / x)))]     # noqa: E731
        loss = grid_best(h) - grid_value(h, sigma)
        return loss <= 0.3 or loss <= 2 * gap_se(*near(best), *near(sigma))

    runs = {name: [replay(r, s, a.steps) for r in rows] for name, s in searches().items()}
    print(f"{len(rows)} image/resolution cases. cost: member-steps / (2 x {a.steps}), i.e. in full fits' pixel-steps "
          f"(a member fits half the training pixels); same: σ equal to the previous search's; loss: held-out dB "
          f"below the spec grid's best on the 4-seed study curves ({sum(k in held for k in map(key, rows))} cases)")
    print(f"{'search':22s} {'cost':>5s} {'max':>5s} {'same':>6s} {'within 0.3':>10s} {'or 2 se':>7s} {'worst':>6s} "
          f"{'mean':>6s} {'>1 dB':>5s}")
    for name, res in runs.items():
        cost = [spent / (2 * a.steps) for _, spent, _ in res]
        same = sum(c == p for (c, _, _), (p, _, _) in zip(res, runs["previous"]))
        loss = [grid_best(held[key(r)]) - grid_value(held[key(r)], c) for r, (c, _, _) in zip(rows, res) if key(r) in held]
        ok = sum(meets(key(r), c) for r, (c, _, _) in zip(rows, res) if key(r) in held)
        print(f"{name:22s} {np.mean(cost):5.2f} {max(cost):5.2f} {same:3d}/{len(rows):<2d} "
              + (f"{sum(x <= 0.3 for x in loss):7d}/{len(loss):<2d} {ok:4d}/{len(loss):<2d} {max(loss):6.2f} "
                 f"{np.mean(loss):6.2f} {sum(x > 1 for x in loss):5d}" if loss else ""))
    if a.cases:
        print(f"\n{'image':22s} {'px':>4s} {'grid best':>9s} | {'previous σ':>10s} {'loss':>6s} | {'shipped σ':>9s} {'loss':>6s} {'cost':>5s} steps")
        for r, (c, spent, st), (p, _, _) in zip(rows, runs["shipped"], runs["previous"]):
            h = held.get(key(r))
            lp, lc = ((grid_best(h) - grid_value(h, p), grid_best(h) - grid_value(h, c)) if h else (math.nan, math.nan))
            print(f"{key(r)[0][:22]:22s} {r['resolution']:4d} {grid_best(h) if h else math.nan:9.2f} | {p:10.3g} {lp:6.2f} | "
                  f"{c:9.3g} {lc:6.2f} {spent / (2 * a.steps):5.2f} {st}")


def key(row) -> tuple[str, int]:
    return os.path.basename(row["image"]), row["resolution"]


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--images", default="sky,grass,astronaut,coffee")
    field_args(r, resolution=48, kmax=None)
    r.add_argument("--every", type=int, default=10, help="record the validation PSNRs every this many steps")
    r.add_argument("--out", required=True)
    r.add_argument("--device", default="cpu")
    an = sub.add_parser("analyse")
    an.add_argument("files", nargs="+")
    an.add_argument("--study", nargs="*", help="autosigma_study.py files with the held-out curves")
    an.add_argument("--steps", type=int, default=300, help="steps of the recorded fits")
    an.add_argument("--cases", action="store_true", help="also one line per case: previous and shipped σ")
    a = p.parse_args()
    record(a) if a.cmd == "record" else analyse(a)
