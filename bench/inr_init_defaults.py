"""How the inr-init study's defaults were found: where do default-initialised raw-(x, y) ReLU MLPs fail?

Fits many seeds per initialiser (one batched model each) and reports, from the per-seed MSE training loss
at sampled steps (PSNR = -10 log10 MSE; sigmoid output so no clamping), the fraction of seeds under 15 dB.
Usage: python bench/inr_init_defaults.py [--relu] [--seeds 100] [--quick] [--out results.json]
(the inr-init docstring's numbers: --relu --seeds 100 and the default sigmoid run, on one H100)
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from l335q.data.images import load_image, resize
from l335q.fields.engine import FieldConfig, fit_image
from l335q.fields.models import INITIALISERS


def study(image, resolution, init, seeds, steps, device, output="sigmoid", width=256, depth=4, lr=1e-3):
    img = resize(load_image(image), resolution)
    cfg = FieldConfig(depth=depth, width=width, init=init, steps=steps, output=output, lr=lr)
    r = fit_image(img, cfg, seeds, device, log_every=100)
    curve = np.array([[np.nan if v is None else v for v in row] for row in r.loss_curve])
    at = {}
    for k, step in enumerate(r.loss_steps):
        if step in (100, 300, 500, 1000, 2000):      # the loss before update ``step``: after ``step`` updates
            p = -10 * np.log10(curve[:, k])
            at[step] = {"median": float(np.nanmedian(p)), "min": float(np.nanmin(p)),
                            "frac_below_15": float(np.mean(~(p > 15)))}
    final = np.array([np.nan if v is None else v for v in r.train_psnr])
    return {"image": image, "resolution": resolution, "init": init, "output": output, "seeds": len(seeds),
            "steps": steps, "width": width, "depth": depth, "lr": lr, "seconds": round(r.seconds, 2), "at_step": at,
            "final_min": float(np.nanmin(final)), "final_median": float(np.nanmedian(final)),
            "final_frac_below_15": float(np.mean(~(final > 15)))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--relu", action="store_true", help="the practical's original ReLU output (default: sigmoid)")
    ap.add_argument("--seeds", type=int, default=64, help="seeds per initialiser (one batched model)")
    ap.add_argument("--out", default="inr_init_defaults.json")
    a = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    n, steps, res = (4, 20, 16) if a.quick else (a.seeds, 1000, 64)
    seeds = list(range(n))
    ap_out = "relu" if a.relu else "sigmoid"
    runs = [dict(image=im, resolution=r, init=init, output=ap_out, steps=st)
            for im, r, st in (("sample:astronaut", res, steps), ("sample:camera", res, steps),
                              ("sample:astronaut", res // 2, steps * 3 // 10 + 1))
            for init in INITIALISERS]
    out = []
    for kw in runs:
        t = time.perf_counter()
        out.append(study(seeds=seeds, device=device, **kw))
        print(json.dumps(out[-1]), f"({time.perf_counter() - t:.1f} s)", flush=True)
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
