"""Result reuse (``l335q.reuse``): extending an inr-init study from 100 seeds to 1,000, with reuse against without.

On a throwaway embedded SQLite database, in this process: the study at 100 seeds (``0-99``), then at 1,000 seeds
(``0-999``) twice, once as submitted (the 100 seeds measured before are reused, 900 fitted) and once with
``fresh: true`` (all 1,000 fitted). Prints the wall seconds of each, the seeds fitted, the ratio reuse / fresh
against the fraction of new seeds (0.9: the target is that or less) and whether the reused seeds' numbers equal
the fresh run's.

    OMP_NUM_THREADS=1 python bench/reuse.py [--seeds 100,1000] [--resolution 16] [--steps 200] [--width 32]
                                           [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def study(args, seeds: str, fresh: bool = False) -> dict:
    return {"task": "inr-init", "title": "reuse bench", "image": "sample:camera", "resolution": args.resolution,
            "steps": args.steps, "depth": args.depth, "width": args.width, "initialiser": "default",
            "seeds": seeds, "seed_group": args.seed_group, "device": "cpu", **({"fresh": True} if fresh else {})}


def timed_submit(spec: dict) -> tuple[float, object]:
    from l335q import service

    t0 = time.perf_counter()
    sub = service.submit(spec)
    return time.perf_counter() - t0, sub


def psnrs(sub_id: int) -> dict[int, float | None]:
    from sqlalchemy import select

    from l335q.db import Job, Metric, session_scope

    with session_scope() as s:
        rows = s.execute(select(Metric.seed, Metric.value).join(Job, Job.id == Metric.job_id)
                         .where(Job.submission_id == sub_id, Metric.name == "psnr", Metric.step.is_(None))).all()
    return dict(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="100,1000", help="the study's seeds before and after, e.g. 100,1000")
    ap.add_argument("--resolution", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--seed-group", type=int, default=25)
    ap.add_argument("--json", help="also write the row here")
    args = ap.parse_args()
    before, after = (int(x) for x in args.seeds.split(","))
    os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="l335q-reuse-bench-")
    os.environ.pop("L335Q_DATABASE_URL", None)
    os.environ.pop("L335Q_BROKER_URL", None)
    from l335q.results import Table, render

    first_s, _ = timed_submit(study(args, f"0-{before - 1}"))
    reuse_s, grown = timed_submit(study(args, f"0-{after - 1}"))
    fresh_s, fresh = timed_submit(study(args, f"0-{after - 1}", fresh=True))
    reused, redone = psnrs(grown.id), psnrs(fresh.id)
    row = {"seeds_before": before, "seeds_after": after, "first_s": round(first_s, 1),
           "extend_with_reuse_s": round(reuse_s, 1), "extend_fresh_s": round(fresh_s, 1),
           "ratio": round(reuse_s / fresh_s, 3), "new_fraction": round((after - before) / after, 3),
           "jobs_run_reuse": len(grown.job_ids), "jobs_reused": len(grown.reused_ids),
           "jobs_run_fresh": len(fresh.job_ids), "same_numbers": reused == redone}
    notes = [f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}; inr-init on sample:camera at {args.resolution} px, "
             f"depth {args.depth}, width {args.width}, {args.steps} steps, {args.seed_group} seeds per job; embedded "
             "SQLite, one process"]
    verdict = "met" if row["ratio"] <= row["new_fraction"] + 0.05 else "not met"
    notes.append(f"target (ratio <= the fraction of new seeds, {row['new_fraction']}): {verdict}")
    print(render(Table(task="reuse", columns=list(row), rows=[row], notes=notes)))
    if args.json:
        Path(args.json).write_text(json.dumps({"row": row, "notes": notes}, indent=1) + "\n")
    sys.exit(0 if row["same_numbers"] else 1)


if __name__ == "__main__":
    main()
