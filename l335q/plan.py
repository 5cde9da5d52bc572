"""A plan before you submit (``l335q submit SPEC --dry-run``): jobs and seeds, reused and to run, and how long.

Nothing is written. The estimate comes from stored durations of done jobs (never reused ones) of the same task
kind and ``device`` param: seconds per unit of **work**, where a job's work is its seeds x steps (or epochs) x
pixels x width² x depth x training images, each factor where the kind has that param. Jobs of the very same
shape (result key) give the rate when there are some; otherwise the median rate of the kind's recent jobs
scales to the new shape. "no estimate" where nothing comparable ran. The time on N workers is the total over
N (at least the longest job): jobs are independent.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import select

from . import reuse
from .db import Job, session_scope
from .submit import prepare

RECENT = 200                     # the kind's most recent done jobs the rate is read from
WORKERS = (1, 2, 4, 8)


def work(params: dict) -> float:
    """Seeds x steps (or epochs) x pixels x width² x depth x training images: what a job's time scales with."""
    out = float(len(params.get("seeds") or [0]))
    for key, power in (("steps", 1), ("epochs", 1), ("resolution", 2), ("width", 2), ("depth", 1)):
        if isinstance(params.get(key), (int, float)) and not isinstance(params.get(key), bool):
            out *= float(params[key]) ** power
    if "train_subset" in params:
        out *= float(params["train_subset"] or 60_000)
    return out


@dataclass
class Plan:
    jobs: int
    seeds: int
    reused: int
    to_run: int
    jobs_to_run: int
    estimated_seconds: float | None
    per_workers: dict[int, float] = field(default_factory=dict)
    unestimated_jobs: int = 0
    basis: str = ""

    def as_json(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = [f"plan: {self.jobs:,} jobs, {self.seeds:,} seeds: {self.reused:,} reused, {self.to_run:,} to run "
                 f"({self.jobs_to_run:,} jobs)"]
        if self.estimated_seconds is None:
            lines.append("estimate: no estimate (no comparable job has run here yet)" if self.jobs_to_run
                         else "estimate: nothing to run")
        else:
            from .report import duration

            on = ", ".join(f"{duration(s)} on {n}" for n, s in self.per_workers.items())
            lines.append(f"estimate: {duration(self.estimated_seconds)} of work ({on} workers; {self.basis})")
            if self.unestimated_jobs:
                lines.append(f"  {self.unestimated_jobs:,} jobs have no estimate (nothing comparable ran) and are "
                             "not counted")
        return "\n".join(lines)


def _rates(s, task: str, keys: set[str], device: set) -> tuple[dict[str, float], dict[str, float]]:
    """(result key -> seconds per work over jobs of that shape, device -> the kind's median seconds per work)."""
    q = (select(Job.result_key, Job.params, Job.seconds, Job.result)
         .where(Job.task == task, Job.state == "done", Job.seconds.is_not(None), Job.seconds > 0)
         .order_by(Job.id.desc()).limit(RECENT))
    same: dict[str, list[float]] = {}
    kind: dict[str, list[float]] = {}
    for key, params, seconds, result in s.execute(q):
        if (result or {}).get("reused_from"):
            continue
        rate = seconds / work(params)
        kind.setdefault(str(params.get("device")), []).append(rate)
        if key in keys:
            same.setdefault(key, []).append(rate)
    return ({k: statistics.median(v) for k, v in same.items()},
            {d: statistics.median(v) for d, v in kind.items() if d in device})


def plan(raw: dict, base_dir: Path | None = None, url: str | None = None) -> Plan:
    """What submitting ``raw`` would do, without writing anything."""
    prep = prepare(raw, base_dir)
    with session_scope(url) as s:
        parts = reuse.split(s, prep.exp.task, prep.jobs, prep.exp.fresh)
        running = [p for p in parts if p.to_run]
        same, kind = _rates(s, prep.exp.task, {p.key for p in running},
                            {str(p.params.get("device")) for p in running})
        s.rollback()
    times, missing, exact = [], 0, 0
    for p in running:
        rate = same.get(p.key, kind.get(str(p.params.get("device"))))
        if rate is None:
            missing += 1
            continue
        exact += p.key in same
        times.append(rate * work({**p.params, "seeds": p.to_run}))
    total = sum(times) if times else None
    basis = (f"{exact:,} of {len(times):,} jobs from jobs of the same shape, the rest scaled from the kind's "
             "recent jobs" if exact < len(times) else "from jobs of the same shape")
    return Plan(jobs=len(prep.jobs), seeds=sum(len(p.params["seeds"]) for p in parts),
                reused=sum(len(p.reused) for p in parts), to_run=sum(len(p.to_run) for p in parts),
                jobs_to_run=len(running), estimated_seconds=None if total is None else round(total, 1),
                per_workers={} if total is None else {n: round(max(total / n, max(times)), 1) for n in WORKERS},
                unestimated_jobs=missing, basis=basis if times else "")
