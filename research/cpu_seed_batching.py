"""CPU: seeds of a field fit as one batched model, or one after the other? (chose ``fields.engine.CPU_SOLO_WORK``)

For a few fit sizes (pixels x width of one seed), the same 3 seeds are fitted with ``chunk=3`` (one batched model,
``bmm``) and ``chunk=1`` (one model per seed, ``mm``), interleaved, at the given torch threads; best of --repeat.
The numbers of both are the same (bit for bit on a CPU, tests/test_fields.py), only the seconds differ.
    .venv/bin/python research/cpu_seed_batching.py --threads 2 --out research/results/cpu-seed-batching-2t.jsonl
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from l335q.data.images import load_image, resize
from l335q.fields.engine import FieldConfig, fit_image

SEEDS = [0, 1, 2]
# (resolution, split, encoding, width): one seed's hidden-layer work, train pixels x width², from 2^20 to 2^26
CASES = [(16, "all", "none", 64), (32, "every-other", "gaussian", 64), (32, "all", "none", 64),
         (32, "every-other", "gaussian", 256),
         (64, "every-other", "gaussian", 256), (64, "all", "none", 256), (128, "every-other", "gaussian", 256)]


def cpu_args(doc: str, steps: int) -> argparse.Namespace:
    """The CPU studies' command line (--threads, --steps, --repeat, --out); torch's threads set from it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    return a


def main() -> None:
    a = cpu_args(__doc__, steps=150)
    with open(a.out, "w") as out:
        for res, split, enc, width in CASES:
            img = resize(load_image("sample:astronaut"), res)
            cfg = FieldConfig(depth=4, width=width, encoding=enc, features=256, sigma=10.0, steps=a.steps)
            fit_image(img, FieldConfig(**{**cfg.as_dict(), "steps": 5}), SEEDS, "cpu", split=split)   # warm-up
            secs, psnr = {3: [], 1: []}, {}
            for _ in range(a.repeat):
                for chunk in (3, 1):
                    t0 = time.perf_counter()
                    r = fit_image(img, cfg, SEEDS, "cpu", split=split, chunk=chunk)
                    secs[chunk].append(time.perf_counter() - t0)
                    psnr[chunk] = r.train_psnr
            pixels = res * res // (4 if split == "every-other" else 1)       # every-other trains on a quarter
            row = {"resolution": res, "split": split, "encoding": enc, "width": width, "train_pixels": pixels,
                   "pixels_x_width2": pixels * width ** 2, "threads": a.threads, "steps": a.steps,
                   "batched_s": round(min(secs[3]), 2), "one_by_one_s": round(min(secs[1]), 2),
                   "batched_over_one_by_one": round(min(secs[3]) / min(secs[1]), 2), "same_psnr": psnr[3] == psnr[1]}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
