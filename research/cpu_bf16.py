"""CPU: a bfloat16 forward for field fits, default or opt-in? (chose ``precision`` as a job option, default fp32)

For the field fits the task kinds run (the Tancik setup, the practical's inr-init net, a SIREN, a small
Fourier-feature net), the same 3 seeds are fitted with ``precision="fp32"`` and ``"bf16"`` (the forward under
bfloat16 autocast), interleaved, at the given torch threads, best of --repeat: seconds, and per-seed PSNR
(held-out where the case has a split) with the largest gap between the two.
    .venv/bin/python research/cpu_bf16.py --threads 2 --out research/results/cpu-bf16-2t.jsonl
"""
from __future__ import annotations

import json
import time
from dataclasses import replace

from l335q.data.images import load_image, resize
from l335q.fields.engine import FieldConfig, fit_image

from cpu_seed_batching import cpu_args

SEEDS = [0, 1, 2]
# name -> (image, resolution, split, FieldConfig): what the field task kinds fit
CASES = {
    "tancik 128 px, gaussian m 256 σ 10, 4x256": (
        "sample:astronaut", 128, "every-other", FieldConfig(encoding="gaussian", features=256, sigma=10.0)),
    "inr-init 64 px, raw (x, y), 4x256, relu output": (
        "sample:astronaut", 64, "all", FieldConfig(output="relu")),
    "siren 64 px, raw (x, y), 4x256 sine, lr 1e-4": (
        "sample:camera", 64, "all", FieldConfig(activation="sine", init="siren", lr=1e-4)),
    "small 32 px, gaussian m 64 σ 5, 3x64": (
        "sample:coffee", 32, "every-other", FieldConfig(depth=3, width=64, encoding="gaussian", features=64, sigma=5.0)),
}


def psnrs(r) -> list[float | None]:
    values = r.heldout_psnr if r.heldout_psnr is not None else r.train_psnr
    return [None if v is None else round(v, 3) for v in values]


def main() -> None:
    a = cpu_args(__doc__, steps=300)
    with open(a.out, "w") as out:
        for name, (image, res, split, cfg) in CASES.items():
            img = resize(load_image(image), res)
            cfg = replace(cfg, steps=a.steps)
            secs, scores = {"fp32": [], "bf16": []}, {}
            for p in secs:                                            # warm-up: oneDNN kernels of both
                fit_image(img, replace(cfg, precision=p, steps=5), SEEDS, "cpu", split=split)
            for _ in range(a.repeat):
                for p in secs:
                    t0 = time.perf_counter()
                    r = fit_image(img, replace(cfg, precision=p), SEEDS, "cpu", split=split)
                    secs[p].append(time.perf_counter() - t0)
                    scores[p] = psnrs(r)
            gaps = [abs(x - y) for x, y in zip(scores["fp32"], scores["bf16"]) if x is not None and y is not None]
            row = {"case": name, "steps": a.steps, "threads": a.threads, "split": split,
                   "fp32_s": round(min(secs["fp32"]), 2), "bf16_s": round(min(secs["bf16"]), 2),
                   "speedup": round(min(secs["fp32"]) / min(secs["bf16"]), 2),
                   "fp32_psnr": scores["fp32"], "bf16_psnr": scores["bf16"],
                   "max_gap_db": round(max(gaps), 3) if gaps else None}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
