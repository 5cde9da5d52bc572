"""Why standard initialisers fail the practical's regression task 1, and whether ``mean-colour`` does not.

The practical's fixed settings: raw (x, y) in [0, 1)², 4 linear layers of width 256, ReLU hidden layers, ReLU
output, Adam 1e-3, 1000 steps. A ReLU output unit whose pre-activation is <= 0 on every pixel is *dead*: it
renders 0 (black in that colour) and gets no gradient of its own.

  python research/inr_init.py dead --seeds 0-999 --resolution 64 --out research/results/inr-init-dead-64.jsonl
      dead output units at initialisation, per seed (no training); appends one JSON line per initialiser
  python research/inr_init.py fit --image sample:astronaut --resolution 32 --steps 300 --seeds 10-29 \\
      --init mean-colour --out research/results/inr-init-fit.jsonl
      fits with the product's engine (``fields.engine.fit_image``); appends one JSON line per (image, init)
      with, per seed, the final PSNR and the dead output units at initialisation and at the end
  python research/inr_init.py report research/results/*.json*      markdown tables of both, from the files

Run it with OMP_NUM_THREADS=1 on a shared CPU; ``--device cuda`` on a GPU.
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from l335q.data.images import grid, load_image, resize
from l335q.fields.engine import FieldConfig, fit_image
from l335q.fields.models import INITIALISERS, BatchedMLP, linear
from l335q.specs import parse_seeds

THRESHOLD_DB = 15.0
PRACTICAL = dict(depth=4, width=256, activation="relu", output="relu", encoding="none", optimizer="adam", lr=1e-3)
STANDARD = [i for i in INITIALISERS if i not in ("siren", "mean-colour")]


@torch.no_grad()
def dead_counts(mlp: BatchedMLP, coords: torch.Tensor) -> tuple[list[int], list[float]]:
    """Per seed: dead output units (pre-activation <= 0 on every pixel), and the fraction of last-hidden-layer
    units that are 0 on every pixel."""
    x = coords.to(mlp.weights[0].device).unsqueeze(0).expand(len(mlp.seeds), -1, -1)
    hidden = mlp.hidden(x)
    out = linear(hidden, mlp.weights[-1], mlp.biases[-1])
    return (out <= 0).all(1).sum(1).tolist(), (hidden <= 0).all(1).float().mean(1).tolist()


def dead_study(init, seeds, resolution, image, chunk=100):
    coords = torch.from_numpy(grid(resolution, resolution).reshape(-1, 2))
    mean = torch.from_numpy(resize(load_image(image), resolution).reshape(-1, 3).mean(0))
    t0 = time.perf_counter()
    dead, hidden = [], []
    for i in range(0, len(seeds), chunk):
        mlp = BatchedMLP(seeds[i:i + chunk], 2, init=init, output="relu", target_mean=mean)
        d, h = dead_counts(mlp, coords)
        dead += d
        hidden += h
    print(f"{init}: {sum(d > 0 for d in dead)} of {len(dead)} seeds start with a dead output "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    return {"init": init, "resolution": resolution, "image": image, "seeds": [seeds[0], seeds[-1]],
            "dead_outputs": dead, "dead_last_hidden": [round(v, 4) for v in hidden],
            "seconds": round(time.perf_counter() - t0, 1)}


def fit_study(image, resolution, steps, init, seeds, device):
    img = resize(load_image(image), resolution)
    coords = torch.from_numpy(grid(resolution, resolution).reshape(-1, 2))
    cfg = FieldConfig(init=init, steps=steps, **PRACTICAL)
    mean = torch.from_numpy(img.reshape(-1, 3).mean(0))
    start = BatchedMLP(seeds, 2, init=init, output="relu", target_mean=mean).to(device)
    dead_start, _ = dead_counts(start, coords)
    r = fit_image(img, cfg, seeds, device)
    dead_end = [n for f in r.fields for n in dead_counts(f.mlp, coords)[0]]
    return {"image": image, "resolution": resolution, "steps": steps, "init": init, "seeds": seeds,
            "psnr": r.train_psnr, "dead_start": dead_start, "dead_end": dead_end, "seconds": round(r.seconds, 1),
            "device": device, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------- report

def _median(values):
    return statistics.median(values) if values else float("nan")


def _name(image: str) -> str:
    return image if image.startswith("sample:") else f"{Path(image).name} (file)"


def merged_cells(fit_rows) -> dict[tuple, dict]:
    """(image, px, steps, init) -> seeds, psnr, fail, dead_start, dead_end over all lines of that cell."""
    cells = defaultdict(lambda: {"seeds": [], "psnr": [], "dead_start": [], "dead_end": []})
    for r in fit_rows:
        c = cells[(r["image"], r["resolution"], r["steps"], r["init"])]
        for k in ("seeds", "psnr", "dead_start", "dead_end"):
            c[k] += r[k]
    for c in cells.values():
        c["psnr"] = [np.nan if v is None else v for v in c["psnr"]]
        c["fail"] = [not (v > THRESHOLD_DB) for v in c["psnr"]]
        c["median"] = _median([v for v in c["psnr"] if np.isfinite(v)])
    return dict(cells)


def findings(cells: dict, dead_rows: list[dict]) -> list[str]:
    """Sentences computed from the measurements."""
    out = []
    for r in dead_rows:
        d = r["dead_outputs"]
        out.append(f"{r['init']}: {sum(x > 0 for x in d)} of {len(d)} seeds start with a dead output unit "
                   f"at {r['resolution']} px")
    for a, b in itertools.combinations(dead_rows, 2):
        if a["init"] != b["init"] and a["resolution"] == b["resolution"] and a["dead_outputs"] == b["dead_outputs"]:
            out.append(f"{a['init']} and {b['init']} leave the same number of dead output units in every one of the "
                       f"{len(a['dead_outputs'])} seeds at {a['resolution']} px")
    std = [c for k, c in cells.items() if k[3] != "mean-colour"]
    failed = sum(sum(c["fail"]) for c in std)
    if std:
        dead_failed = sum(f and d > 0 for c in std for f, d in zip(c["fail"], c["dead_start"]))
        started = sum(d > 0 for c in std for d in c["dead_start"])
        recovered = sum(not f and d > 0 for c in std for f, d in zip(c["fail"], c["dead_start"]))
        still = sum(f and d > 0 for c in std for f, d in zip(c["fail"], c["dead_end"]))
        out.append(f"standard initialisers: {failed} of {sum(len(c['fail']) for c in std)} fits failed; "
                   f"{dead_failed} of the failures started with a dead output unit and {still} ended with one; "
                   f"{recovered} of the {started} fits that started with one recovered")
    for px, steps in sorted({(k[1], k[2]) for k in cells}):
        ours = {k[0]: c for k, c in cells.items() if k[1:] == (px, steps, "mean-colour")}
        if not ours:
            continue
        passed = [im for im, c in ours.items() if not any(c["fail"])]
        low_im = min(ours, key=lambda im: np.nanmin(ours[im]["psnr"]))
        out.append(f"{px} px, {steps} steps — mean-colour: every seed > {THRESHOLD_DB:g} dB on {len(passed)} of "
                   f"{len(ours)} images ({sum(len(c['psnr']) for c in ours.values())} fits); lowest "
                   f"{np.nanmin(ours[low_im]['psnr']):.2f} dB ({_name(low_im)})")
        for im, c in sorted(ours.items()):
            rivals = {k[3]: r for k, r in cells.items() if k[:3] == (im, px, steps) and k[3] != "mean-colour"}
            if rivals:
                best = max(rivals, key=lambda i: rivals[i]["median"])
                out.append(f"{px} px, {steps} steps, {_name(im)}: median mean-colour {c['median']:.2f} dB "
                           f"({len(c['psnr'])} seeds), best standard {best} {rivals[best]['median']:.2f} dB "
                           f"({len(rivals[best]['psnr'])} seeds): {c['median'] - rivals[best]['median']:+.2f} dB")
    return out


def report(paths) -> str:
    dead_rows, fit_rows = [], []
    for p in paths:
        for row in (json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()):
            (fit_rows if "psnr" in row else dead_rows).append(row)
    out = []
    if dead_rows:
        out += ["| initialiser | px | seeds | seeds with a dead output | dead outputs per seed (mean of 3) "
                "| last hidden layer dead (mean) |", "|---|---|---|---|---|---|"]
        for r in dead_rows:
            d = r["dead_outputs"]
            out.append(f"| {r['init']} | {r['resolution']} | {len(d)} | {sum(x > 0 for x in d)} "
                       f"({100 * sum(x > 0 for x in d) / len(d):.1f} %) | {np.mean(d) / 3:.3f} | "
                       f"{np.mean(r['dead_last_hidden']):.3f} |")
        out.append("")
    cells = merged_cells(fit_rows)
    if cells:
        out += ["| image | px | steps | initialiser | seeds | > 15 dB | min | median | max "
                "| dead at start → failed | failed without a dead start | dead at end |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        order = {name: i for i, name in enumerate(INITIALISERS)}
        for key in sorted(cells, key=lambda k: (k[1], k[2], k[0], order[k[3]])):
            c = cells[key]
            ok = sorted(v for v in c["psnr"] if np.isfinite(v))
            n = len(c["psnr"])
            started_dead = [d > 0 for d in c["dead_start"]]
            out.append(
                f"| {_name(key[0])} | {key[1]} | {key[2]} | {key[3]} | {n} | {n - sum(c['fail'])} / {n} | "
                f"{ok[0]:.2f} | {c['median']:.2f} | {ok[-1]:.2f} | "
                f"{sum(f and s for f, s in zip(c['fail'], started_dead))} of {sum(started_dead)} | "
                f"{sum(f and not s for f, s in zip(c['fail'], started_dead))} | {sum(d > 0 for d in c['dead_end'])} |")
        out.append("")
    return "\n".join(out + [f"* {line}" for line in findings(cells, dead_rows)])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dead")
    d.add_argument("--seeds", default="0-999")
    d.add_argument("--resolution", type=int, default=64)
    d.add_argument("--image", default="sample:astronaut", help="only mean-colour reads it (its mean colour)")
    d.add_argument("--init", default=",".join(STANDARD + ["mean-colour"]), help="comma-separated initialisers")
    d.add_argument("--out", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--image", required=True, help="sample:<name> or a file path")
    f.add_argument("--resolution", type=int, default=64)
    f.add_argument("--steps", type=int, default=1000)
    f.add_argument("--seeds", default="0-9")
    f.add_argument("--init", required=True, help="comma-separated initialisers")
    f.add_argument("--device", default="cpu")
    f.add_argument("--out", required=True)
    r = sub.add_parser("report")
    r.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    if a.cmd in ("dead", "fit"):
        for init in a.init.split(","):
            if a.cmd == "dead":
                row = dead_study(init, parse_seeds(a.seeds), a.resolution, a.image)
            else:
                row = fit_study(a.image, a.resolution, a.steps, init, parse_seeds(a.seeds), a.device)
                ok = [v for v in row["psnr"] if v is not None]
                print(f"{a.image} {init}: {sum(v > THRESHOLD_DB for v in ok)} of {len(row['psnr'])} seeds > 15 dB, "
                      f"median {_median(ok):.2f} dB ({row['seconds']} s)", flush=True)
            with open(a.out, "a") as fh:
                fh.write(json.dumps(row) + "\n")
    else:
        print(report(a.files))


if __name__ == "__main__":
    sys.exit(main())
