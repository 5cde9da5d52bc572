"""Measure candidate validation schemes for automatic σ against the held-out curve, on one σ lattice.

  python research/autosigma_study.py --images sky,grass --resolution 48 --out research/results/autosigma-48.jsonl

For each image and each σ on the lattice 0.25·2^(k/4), writes one JSON line: the held-out PSNR per seed
(every-other split, the quantity ffn-sigma scores) and, per scheme, the validation PSNR per fold and seed
of fits made on the training pixels only. Schemes (a fold = fit on one part of the training pixels,
validate on the rest):
  cb      checkerboard halves of the training lattice (2 folds);
  quarter the four [a::2, b::2] sub-lattices (4 folds; the held-out geometry at half the density);
  holes5  (col + 2·row) % 5 == k held out (folds k = 0, 1, 2; every hole's 4 neighbours are fit pixels);
  holes8  (col + 3·row) % 8 == k held out (folds k = 0, 4).
Lines already in --out are kept and skipped (the run can be resumed). ``--analyse`` reads the file and
prints, per selection rule (σ up to autosigma's cap), the held-out loss against the spec grid's best
(rules ranked by their worst image; autosigma's own rule is ``cb edge0.5 x2^(0/4) s1``).
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np

SCHEMES = ("cb", "quarter", "holes5", "holes8")
SPEC_GRID = (0.5, 1, 2, 5, 10, 20, 50)


def study_image(name: str, resolution: int) -> np.ndarray:
    """A sample name (``sky``) or an image file path, resized to resolution² (research/autosigma*.py share it)."""
    from l335q.data.images import load_image, resize

    return resize(load_image(name if "/" in name or ":" in name else f"sample:{name}"), resolution)


def study_cap(resolution: int) -> float:
    """autosigma.cap for the every-other split of a resolution² image: a quarter of the training side."""
    return resolution / 8


def field_args(p: argparse.ArgumentParser, resolution: int, kmax: int | None, width: int = 96, seeds: int = 4) -> None:
    """The options the autosigma research scripts share: image size, the field fitted, seeds, σ lattice, threads."""
    p.add_argument("--resolution", type=int, default=resolution)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=width)
    p.add_argument("--features", type=int, default=width)
    p.add_argument("--seeds", type=int, default=seeds)
    if kmax is not None:
        p.add_argument("--kmax", type=int, default=kmax, help="σ lattice 0.25·2^(k/4), k = 0..kmax")
    p.add_argument("--threads", type=int, default=2)


def field_config(a):
    """The gaussian-encoding FieldConfig those options describe."""
    from l335q.fields.engine import FieldConfig

    return FieldConfig(depth=a.depth, width=a.width, encoding="gaussian", features=a.features, steps=a.steps)


def study_lattice(kmax: int) -> list[float]:
    """The study's σ lattice 0.25·2^(k/4), k = 0..kmax (rounded as the study files store it)."""
    return [round(0.25 * 2 ** (k / 4), 6) for k in range(kmax + 1)]


def folds(coords: np.ndarray, scheme: str) -> list[np.ndarray]:
    """Boolean masks over the training pixels: True = validate, False = fit."""
    from l335q.fields.autosigma import checkerboard, lattice_index

    if scheme == "cb":                          # autosigma's own split: validate on the odd half, then the even
        even = checkerboard(coords)
        return [~even, even]
    col, row = lattice_index(coords)
    if scheme == "quarter":
        return [~((col % 2 == a) & (row % 2 == b)) for a in (0, 1) for b in (0, 1)]
    if scheme == "holes5":
        return [(col + 2 * row) % 5 == k for k in (0, 1, 2)]
    if scheme == "holes8":
        return [(col + 3 * row) % 8 == k for k in (0, 4)]
    raise ValueError(scheme)


def measure(a) -> None:
    import torch

    from l335q.data.images import split_pixels
    from l335q.fields.engine import fit_pixels

    torch.set_num_threads(a.threads)
    done = set()
    if os.path.exists(a.out):
        done = {(r["image"], r["resolution"], r["sigma"]) for r in map(json.loads, open(a.out))}
    cfg = field_config(a)
    sigmas = study_lattice(a.kmax)
    for name in a.images.split(","):
        img = study_image(name, a.resolution)
        (c, r), (hc, hr) = split_pixels(img, "every-other")
        for s in sigmas:
            if (name, a.resolution, s) in done:
                continue
            cfg.sigma = s
            row = {"image": name, "resolution": a.resolution, "sigma": s,
                   "heldout": fit_pixels(c, r, cfg, list(range(a.seeds)), "cpu",
                                         evals={"h": (hc, hr)}).eval_psnr["h"]}
            for scheme in a.schemes.split(","):
                row[scheme] = [fit_pixels(c[~v], r[~v], cfg, [0, 1], "cpu", evals={"v": (c[v], r[v])}).eval_psnr["v"]
                               for v in folds(c, scheme)]
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(name, s, round(float(np.mean(row["heldout"])), 2), flush=True)


def val_curve(rows, scheme, folds_used=None, seeds_used=(0,)):
    """σ -> mean validation PSNR over the chosen folds and seeds."""
    out = {}
    for r in rows:
        fl = r[scheme] if folds_used is None else [r[scheme][k] for k in folds_used if k < len(r[scheme])]
        vals = [f[s] for f in fl for s in seeds_used]
        out[r["sigma"]] = -math.inf if None in vals else float(np.mean(vals))
    return out


def pick(curve: dict, rule: str) -> int:
    """Index (on the sorted lattice) a rule picks from a validation curve.

    argmax; smooth (argmax of the running mean over 3 neighbours); vertex (parabola in log σ through the
    top points, its vertex); edge<d> (the largest σ whose validation PSNR is within d dB of the best)."""
    s = sorted(curve)
    v = np.array([curve[x] for x in s])
    v = np.where(np.isfinite(v), v, np.nanmin(np.where(np.isfinite(v), v, np.nan)))
    i = int(np.argmax(v))
    if rule == "argmax":
        return i
    if rule == "smooth":
        return int(np.argmax([np.mean(v[max(0, j - 1): j + 2]) for j in range(len(v))]))
    if rule == "vertex":
        lo, hi = max(0, i - 3), min(len(v), i + 4)
        c = np.polyfit(np.arange(lo, hi), v[lo:hi], 2)
        return int(np.clip(round(-c[1] / (2 * c[0])) if c[0] < 0 else i, 0, len(v) - 1))
    if rule.startswith("edge"):                 # the rule autosigma ships, through its own code
        from l335q.fields.autosigma import pick_sigma

        return s.index(pick_sigma(curve.__getitem__, s, float(rule[4:]))[0])
    raise ValueError(rule)


def by_image(path: str) -> dict:
    """(image, resolution) -> that image's rows of a study file."""
    by = {}
    for r in map(json.loads, open(path)):
        by.setdefault((r["image"], r["resolution"]), []).append(r)
    return by


def held_curve(rs) -> dict:
    """σ -> held-out PSNR (mean over the study's seeds)."""
    return {r["sigma"]: float(np.mean(r["heldout"])) for r in rs}


def spec_best(held: dict) -> float:
    """The best held-out PSNR among the spec grid's σ (lattice points within 20 % of one)."""
    return max(v for s, v in held.items() if any(abs(s - g) / g < 0.2 for g in SPEC_GRID))


def grid_value(held: dict, sigma: float) -> float:
    """Held-out PSNR at any σ inside the lattice, linear in log σ between lattice points."""
    lat = sorted(held)
    return float(np.interp(math.log(sigma), np.log(lat), [held[s] for s in lat]))


def grid_best(held: dict) -> float:
    """The best held-out PSNR among the spec grid's σ inside the lattice (interpolated by grid_value)."""
    return max(grid_value(held, g) for g in SPEC_GRID if g <= max(held))


SPLITS = (((0, 1), (2, 3)), ((2, 3), (0, 1)), ((0, 2), (1, 3)), ((1, 3), (0, 2)))


def noise_floor(paths: list[str]) -> None:
    """How close to the spec grid's best can ANY choice of σ be expected to land, given seed noise?

    Per image and per split of the 4 held-out seeds into halves A and B: an oracle picks σ with the
    held-out pixels themselves (seeds A: the best lattice σ, and the best spec-grid σ), and is scored on
    seeds B against the spec grid's best on seeds B (grid σ between lattice points: interpolated in log σ),
    as ffn-sigma scores sigma_auto. The shipped rule (training pixels only, seed 0) is scored the same way.
    A miss of an oracle is seed noise, not a failure of a σ rule."""
    from l335q.fields.autosigma import Search, pick_sigma

    counts = {"rule": 0, "lattice oracle": 0, "grid oracle": 0}
    n = rule_ok = 0
    print(f"{'res':>3s} {'image':10s} {'rule loss (4 splits)':>26s} {'lattice oracle':>26s} {'grid oracle':>26s}")
    for path in paths:
        for (name, res), rs in sorted(by_image(path).items(), key=lambda kv: kv[0][1]):
            if len(rs[0]["heldout"]) < 4:
                continue
            cb = val_curve([r for r in rs if r["sigma"] <= study_cap(res)], "cb")
            rule = pick_sigma(cb.__getitem__, sorted(cb), Search.tol_db)[0]
            loss = {k: [] for k in counts}
            for seeds_a, seeds_b in SPLITS:
                ha, hb = ({r["sigma"]: float(np.mean([r["heldout"][i] for i in ss])) for r in rs} for ss in (seeds_a, seeds_b))
                grid = [g for g in SPEC_GRID if g <= max(ha)]
                best_b = grid_best(hb)
                loss["rule"].append(best_b - hb[rule])
                loss["lattice oracle"].append(best_b - hb[max(ha, key=ha.get)])
                loss["grid oracle"].append(best_b - grid_value(hb, max(grid, key=lambda g: grid_value(ha, g))))
            held = held_curve(rs)
            rule_ok += grid_best(held) - held[rule] <= 0.3
            n += 1
            for k in counts:
                counts[k] += max(loss[k]) <= 0.3
            print(f"{res:3d} {os.path.basename(name)[:10]:10s} " +
                  " ".join(" ".join(f"{x:6.2f}" for x in loss[k]) for k in counts))
    print("image/resolution cases within 0.3 dB on all 4 seed splits: " +
          ", ".join(f"{k} {v} of {n}" for k, v in counts.items()))
    print(f"the rule within 0.3 dB of the spec grid's best on the means of all 4 seeds: {rule_ok} of {n}")


def analyse(path: str, top: int = 40, only: list[str] | None = None) -> None:
    by = by_image(path)
    rows = [r for rs in by.values() for r in rs]
    rules = {}
    have = set(rows[0]) & set(SCHEMES)
    combos = {"cb": ("cb",), "quarter": ("quarter",), "holes5": ("holes5",), "holes8": ("holes8",),
              "cb+h5": ("cb", "holes5"), "cb+h8": ("cb", "holes8"), "h5+h8": ("holes5", "holes8")}
    for cname, schemes in combos.items():
        if not set(schemes) <= have:
            continue
        for k in range(0, 6):
            for rule in ("argmax", "smooth", "vertex", "edge0.25", "edge0.4", "edge0.5", "edge1"):
                for seeds in ((0,), (0, 1)):
                    rules[f"{cname} {rule} x2^({k}/4) s{len(seeds)}"] = (schemes, k, rule, seeds)
    table = {}
    for name, (schemes, k, rule, seeds) in rules.items():
        losses = []
        for key, rs in sorted(by.items()):
            held = held_curve(rs)
            lattice = sorted(held)
            best_spec = spec_best(held)
            capped = [r for r in rs if r["sigma"] <= study_cap(r["resolution"])]
            curves = [val_curve(capped, sc, seeds_used=seeds) for sc in schemes]
            curve = {s: float(np.mean([c[s] for c in curves])) for s in curves[0]}
            i = min(pick(curve, rule) + k, len(lattice) - 1)
            losses.append((os.path.basename(key[0]), max(held.values()) - held[lattice[i]], best_spec - held[lattice[i]]))
        table[name] = losses
    ranked = sorted(table.items(), key=lambda kv: (max(x[2] for x in kv[1]), np.mean([x[2] for x in kv[1]])))
    for name, losses in ([(n, table[n]) for n in only] if only else ranked[:top]):
        worst = max(x[2] for x in losses)
        ok = sum(x[2] <= 0.3 for x in losses)
        print(f"{name:30s} worst {worst:5.2f} mean {np.mean([x[2] for x in losses]):5.2f} ok {ok}/{len(losses)}  " +
              " ".join(f"{n[:5]}:{l2:.2f}" for n, l1, l2 in losses))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--images", default="camera,astronaut,chelsea,grass,sky,coffee,brick,gravel,rocket,hubble",
                   help="sample names or image file paths (research/unseen_images.py writes three)")
    field_args(p, resolution=48, kmax=28)
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--out", default="research/results/autosigma-study.jsonl")
    p.add_argument("--analyse", action="store_true")
    p.add_argument("--rules", default=None, help="with --analyse: print only these rules (comma-separated names)")
    p.add_argument("--noise-floor", nargs="+", default=None, metavar="FILE",
                   help="only print noise_floor() of these study files (oracle σ choices against seed noise)")
    a = p.parse_args()
    if a.noise_floor:
        noise_floor(a.noise_floor)
    else:
        analyse(a.out, only=a.rules.split(",") if a.rules else None) if a.analyse else measure(a)
