"""The automatic σ as shipped against the grid's best σ and against the rule it replaced, per image and resolution.

  python research/autosigma_fidelity.py --images sky,grass --resolutions 48,64 --seeds 2 --device cpu \\
      --out research/results/autosigma-fidelity-cpu.jsonl
  python research/autosigma_fidelity.py --report research/results/autosigma-fidelity-cpu.jsonl

Per image × resolution (every-other split, the study's 3×96 MLP, m = 96, 300 steps unless told otherwise):
the σ ``auto_sigma`` chooses now (one batched model, trials stop as their validation settles, a budget of
two full fits) and the σ of the rule it replaced (every σ of the 2^(1/4) lattice × both checkerboard folds,
300 steps each: ``PREVIOUS``), both on seed 0 as a job does; then one batched fit of the spec grid's σ, the
new σ and the previous σ, each with ``--seeds`` seeds, scored on the held-out pixels. A case meets the
issue's fidelity target when the new σ is within 0.3 dB of the grid's best or within two standard errors
of seed noise of it (``results.gap_se``). Also the seconds of a full fit (one seed) and of both choices.
``--unseen DIR`` writes pictures no rule was chosen on (scikit-image's horse, phantom and motorcycle as in
``unseen_images.py``, and crops of regions the samples do not show at that scale) and adds them.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

SPEC_GRID = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
TARGET_DB = 0.3
# crops (row slice, column slice) of scikit-image pictures: regions no sample shows at this scale
CROPS = {"astronaut-face": ("astronaut", (slice(20, 220), slice(160, 360))),
         "coffee-cup": ("coffee", (slice(30, 330), slice(150, 450))),
         "rocket-towers": ("rocket", (slice(150, 427), slice(300, 577))),
         "hubble-corner": ("hubble_deep_field", (slice(0, 300), slice(0, 300))),
         "chelsea-face": ("chelsea", (slice(40, 240), slice(120, 320))),
         "ihc-corner": ("immunohistochemistry", (slice(0, 256), slice(0, 256))),
         "clock-motion": ("clock_motion", None),
         "motorcycle-right": ("motorcycle_right", (slice(150, 450), slice(350, 650)))}


def write_unseen(out: str) -> list[str]:
    """Write the pictures of ``CROPS`` and the three of ``unseen_images.py`` to ``out``; their paths."""
    import skimage.data as data
    import skimage.io as io

    os.makedirs(out, exist_ok=True)
    pictures = {"horse": (~data.horse()).astype(np.uint8) * 255,
                "phantom": (data.shepp_logan_phantom() * 255).astype(np.uint8),
                "motorcycle": data.stereo_motorcycle()[0]}
    folder = os.path.join(os.path.dirname(data.__file__))
    for name, (source, crop) in CROPS.items():
        a = getattr(data, source)() if hasattr(data, source) else io.imread(os.path.join(folder, f"{source}.png"))
        pictures[name] = a if crop is None else a[crop]
    paths = []
    for name, a in pictures.items():
        path = os.path.join(out, f"{name}.png")
        io.imsave(path, a, check_contrast=False)
        paths.append(path)
    return paths


def measure(name: str, resolution: int, cfg, seeds: list[int], device: str) -> dict:
    import torch

    from l335q.data.images import split_pixels
    from l335q.fields.autosigma import PREVIOUS, Search, auto_sigma
    from l335q.fields.engine import fit_image, fit_pixels
    from l335q.results import gap_se
    from autosigma_study import study_image

    img = study_image(name, resolution)

    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    _, full_s = timed(lambda: fit_image(img, cfg, [seeds[0]], device, split="every-other"))
    new, new_s = timed(lambda: auto_sigma(img, cfg, "every-other", seed=seeds[0], device=device, search=Search()))
    old, old_s = timed(lambda: auto_sigma(img, cfg, "every-other", seed=seeds[0], device=device, search=PREVIOUS))
    sigmas = list(SPEC_GRID) + [new.sigma, old.sigma]
    (c, r), held = split_pixels(img, "every-other")
    fit = fit_pixels(c, r, cfg, [s for _ in sigmas for s in seeds], device, evals={"heldout": held},
                     sigmas=[g for g in sigmas for _ in seeds])
    per = np.array([np.nan if v is None else v for v in fit.heldout_psnr]).reshape(len(sigmas), len(seeds))
    mean, sd = np.nanmean(per, 1), (np.nanstd(per, 1, ddof=1) if len(seeds) > 1 else np.zeros(len(sigmas)))
    best = int(np.nanargmax(mean[:len(SPEC_GRID)]))
    row = {"image": name, "resolution": resolution, "seeds": len(seeds), "device": device,
           "grid": {str(g): round(float(m), 3) for g, m in zip(SPEC_GRID, mean)},
           "best_sigma": SPEC_GRID[best], "best_psnr": round(float(mean[best]), 3)}
    for key, k, choice, secs in (("new", len(SPEC_GRID), new, new_s), ("old", len(SPEC_GRID) + 1, old, old_s)):
        row[key] = {"sigma": choice.sigma, "psnr": round(float(mean[k]), 3),
                    "loss_db": round(float(mean[best] - mean[k]), 3),
                    "se_db": round(gap_se(float(sd[best]), len(seeds), float(sd[k]), len(seeds)), 3),
                    "seconds": round(secs, 3), "trials": len(choice.trials), "steps": choice.steps}
    row["full_fit_seconds"] = round(full_s, 3)
    return row


def meets(case: dict) -> bool:
    """Within the target of the grid's best, or within two standard errors of seed noise of it."""
    return case["loss_db"] <= TARGET_DB or case["loss_db"] <= 2 * case["se_db"]


def report(rows: list[dict]) -> None:
    print(f"{'image':16s} {'px':>4s} {'best σ':>6s} {'best dB':>8s} | {'new σ':>6s} {'loss':>6s} {'± se':>5s} "
          f"{'s':>5s} | {'old σ':>6s} {'loss':>6s} {'± se':>5s} {'s':>6s} | {'full s':>6s}")
    for r in rows:
        n, o = r["new"], r["old"]
        print(f"{os.path.basename(r['image'])[:16]:16s} {r['resolution']:4d} {r['best_sigma']:6g} {r['best_psnr']:8.2f} | "
              f"{n['sigma']:6.3g} {n['loss_db']:6.2f} {n['se_db']:5.2f} {n['seconds']:5.1f} | {o['sigma']:6.3g} "
              f"{o['loss_db']:6.2f} {o['se_db']:5.2f} {o['seconds']:6.1f} | {r['full_fit_seconds']:6.2f}"
              + ("" if meets(n) else "  new misses"))
    for res in sorted({r["resolution"] for r in rows}) + [None]:
        rs = [r for r in rows if res is None or r["resolution"] == res]
        where = f"at {res} px" if res else "all"
        for key, label in (("new", "shipped rule"), ("old", "previous rule")):
            loss = [r[key]["loss_db"] for r in rs]
            worst = max(rs, key=lambda r: r[key]["loss_db"])
            print(f"{where}, {label}: {sum(meets(r[key]) for r in rs)} of {len(rs)} cases within {TARGET_DB} dB of the "
                  f"grid's best or within two standard errors; {sum(x <= TARGET_DB for x in loss)} within {TARGET_DB} dB; "
                  f"worst {worst[key]['loss_db']:.2f} dB ({os.path.basename(worst['image'])} {worst['resolution']} px); "
                  f"mean {np.mean(loss):.2f} dB; mean choice {np.mean([r[key]['seconds'] for r in rs]):.2f} s")
        same = sum(r["new"]["sigma"] == r["old"]["sigma"] for r in rs)
        print(f"{where}: the same σ as the previous rule in {same} of {len(rs)} cases; choice time / full fit: "
              f"shipped {np.mean([r['new']['seconds'] / r['full_fit_seconds'] for r in rs]):.2f}, previous "
              f"{np.mean([r['old']['seconds'] / r['full_fit_seconds'] for r in rs]):.2f} (means)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", default="sky,grass,astronaut,coffee")
    p.add_argument("--unseen", default=None, help="write the unseen pictures to this folder and add them")
    p.add_argument("--resolutions", default="64,128")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--features", type=int, default=96)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=None, help="start no new case after this long")
    p.add_argument("--out", default=None, help="append each case's JSON line here")
    p.add_argument("--report", nargs="*", default=None, help="only print the table of these .jsonl files")
    a = p.parse_args()
    if a.report is not None:
        report([json.loads(line) for path in a.report for line in open(path)])
        return
    import torch

    from l335q.fields.engine import FieldConfig

    torch.set_num_threads(a.threads)
    cfg = FieldConfig(depth=a.depth, width=a.width, encoding="gaussian", features=a.features, steps=a.steps)
    images = a.images.split(",") + (write_unseen(a.unseen) if a.unseen else [])
    t0, rows = time.perf_counter(), []
    for name in images:
        for res in map(int, a.resolutions.split(",")):
            if a.max_seconds and time.perf_counter() - t0 > a.max_seconds:
                break
            rows.append(measure(name, res, cfg, list(range(a.seeds)), a.device))
            print(json.dumps(rows[-1]), flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    print(f"{a.depth}x{a.width}, m={a.features}, {a.steps} steps, {a.seeds} held-out seeds, device {a.device}")
    report(rows)


if __name__ == "__main__":
    main()
