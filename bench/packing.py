"""Job packing: jobs per hour for K small queued ``inr-init`` jobs of one shape (one seed each), one at a time
against packed into one batched run, side by side in this process.

Modes:
  jobs    (default) the whole path: K queued jobs in a database (a throwaway embedded SQLite file, or
          ``--database URL``), run through ``runner.execute_job`` in this process: first with packing off
          (``L335Q_PACK_MAX=1``, K claims, K fits, K commits), then packed (``L335Q_PACK_MAX=--pack``). Also
          checks that both write the same metric rows.
  engine  the engine-level effect only, without a database (does not import SQLAlchemy; runs on a bare GPU
          machine): K one-seed ``fit_image`` calls one by one against one ``fit_image`` of the K seeds.
Sizes default to the practical's inr-init (64 px, 4 x 256, 1000 steps); a short warm-up fit runs first.
Usage: python bench/packing.py [--mode jobs|engine] [--jobs 16] [--pack 16] [--device cpu|cuda]
       [--resolution 64] [--steps 1000] [--depth 4] [--width 256] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time


def inr_init_spec(args, seeds: str) -> dict:
    return {"task": "inr-init", "image": "sample:astronaut", "resolution": args.resolution, "steps": args.steps,
            "depth": args.depth, "width": args.width, "initialiser": "default", "output": "relu",
            "seeds": seeds, "seed_group": 1, "device": args.device, "fresh": True}   # packed and alone: both computed


def engine_mode(args) -> dict:
    """K one-seed fits one by one vs one batched fit of the K seeds (the config ``tasks/inr_init.config`` makes)."""
    from l335q.data.images import load_image, resize
    from l335q.fields.engine import FieldConfig, fit_image

    img = resize(load_image("sample:astronaut"), args.resolution)
    cfg = FieldConfig(depth=args.depth, width=args.width, activation="relu", output="relu", encoding="none",
                      init="default", optimizer="adam", lr=1e-3, steps=args.steps)
    seeds = list(range(args.jobs))
    fit_image(img, FieldConfig(**{**cfg.as_dict(), "steps": 5}), [0, 1], args.device)      # warm-up
    t0 = time.perf_counter()
    solo = [fit_image(img, cfg, [s], args.device).train_psnr[0] for s in seeds]
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    both = fit_image(img, cfg, seeds, args.device).train_psnr
    packed = time.perf_counter() - t0
    diffs = [abs(a - b) for a, b in zip(solo, both) if a is not None and b is not None]
    return {"one_at_a_time_s": one, "packed_s": packed,
            "same_psnr": solo == both, "max_psnr_diff_db": max(diffs) if diffs else None}


def jobs_mode(args) -> dict:
    """K queued jobs through ``execute_job``: packing off, then on; the same rows either way?"""
    if not args.database:
        os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="l335q-pack-bench-")
    else:
        os.environ["L335Q_DATABASE_URL"] = args.database
    os.environ.pop("L335Q_BROKER_URL", None)
    from job_rows import metric_rows
    from l335q.runner import execute_job
    from l335q.submit import create_submission

    def run(pack: int) -> tuple[float, list[int]]:
        os.environ["L335Q_PACK_MAX"] = str(pack)
        _, ids = create_submission(inr_init_spec(args, f"0-{args.jobs - 1}"))
        t0 = time.perf_counter()
        for job_id in ids:
            execute_job(job_id)
        return time.perf_counter() - t0, ids

    os.environ["L335Q_PACK_MAX"] = "1"
    _, warm = create_submission({**inr_init_spec(args, "0"), "steps": 5})
    execute_job(warm[0])
    one, alone = run(1)
    packed, ids = run(args.pack)
    same = [metric_rows(i) for i in alone] == [metric_rows(i) for i in ids]
    return {"one_at_a_time_s": one, "packed_s": packed, "same_rows": same}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("jobs", "engine"), default="jobs")
    ap.add_argument("--jobs", type=int, default=16, help="K: queued one-seed jobs of one shape")
    ap.add_argument("--pack", type=int, default=16, help="L335Q_PACK_MAX for the packed side (jobs mode)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--database", default=None, help="jobs mode: a database URL (default: a throwaway SQLite file)")
    ap.add_argument("--json", default=None, help="write the numbers here as JSON")
    args = ap.parse_args(argv)
    import torch

    out = (engine_mode if args.mode == "engine" else jobs_mode)(args)
    out["jobs_per_hour_one_at_a_time"] = 3600 * args.jobs / out["one_at_a_time_s"]
    out["jobs_per_hour_packed"] = 3600 * args.jobs / out["packed_s"]
    out["speedup"] = out["one_at_a_time_s"] / out["packed_s"]
    out["setup"] = {**vars(args), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "machine": torch.cuda.get_device_name() if args.device.startswith("cuda") else
                    f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"}
    same = out.get("same_rows", out.get("same_psnr"))
    print(f"{args.mode} mode, {args.jobs} jobs of inr-init {args.resolution} px {args.depth}x{args.width} "
          f"{args.steps} steps, one seed each, {args.device}")
    print(f"{'':14}{'seconds':>9}{'jobs/hour':>11}")
    print(f"{'one at a time':14}{out['one_at_a_time_s']:9.2f}{out['jobs_per_hour_one_at_a_time']:11.0f}")
    print(f"{'packed':14}{out['packed_s']:9.2f}{out['jobs_per_hour_packed']:11.0f}")
    print(f"packed / one at a time: {out['speedup']:.2f}x jobs per hour; identical results: {same}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
