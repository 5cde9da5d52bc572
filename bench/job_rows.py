"""A job's stored results read back one way by the benchmarks and the tests (tests/conftest.py puts bench/ on the
path, as tests/test_faults.py does for bench/faults.py): its metric rows and its artifacts in a fixed order, and a
stop requested (``checkpoints.stop_event``) once its progress passes a point."""
from __future__ import annotations

import threading
import time

from sqlalchemy import select

from l335q.checkpoints import stop_event
from l335q.db import Artifact, Job, Metric, session_scope


def metric_rows(job_id: int, timings: bool = False) -> list[tuple]:
    """Every metric of a job as (seed, step, name, value), sorted by (name, seed, step); wall-clock rows (names
    ending in ``seconds``) only with ``timings``."""
    with session_scope() as s:
        rows = s.execute(select(Metric.seed, Metric.step, Metric.name, Metric.value)
                         .where(Metric.job_id == job_id).order_by(Metric.id)).all()
    return sorted((tuple(r) for r in rows if timings or not r[2].endswith("seconds")),
                  key=lambda r: (r[2], r[0] or 0, r[1] or -1))


def numbers(job_id: int) -> dict[tuple, float | None]:
    """``metric_rows`` as {(seed, step, name): value}."""
    return {r[:3]: r[3] for r in metric_rows(job_id)}


def artifact_rows(job_id: int) -> list[tuple]:
    """Every artifact of a job as (name, seed, sha256, sorted meta items), in the order written."""
    with session_scope() as s:
        arts = s.execute(select(Artifact.name, Artifact.seed, Artifact.sha256, Artifact.meta)
                         .where(Artifact.job_id == job_id).order_by(Artifact.id)).all()
    return [(n, sd, sha, sorted((meta or {}).items())) for n, sd, sha, meta in arts]


def stop_when(job_id: int, stage: int, done: int, seen: dict | None = None, timeout_s: float = 300):
    """Watch the job's progress (in its row) and set ``stop_event`` once it reaches ``done`` in ``stage`` or a
    later stage (``seen["stop_requested_at"]``: the progress it saw then). Returns ``finish()``: it ends the watch
    and clears the event; call it when the run is over."""
    ended = threading.Event()

    def watch():
        deadline = time.monotonic() + timeout_s
        while not ended.wait(0.02) and time.monotonic() < deadline:
            with session_scope() as s:
                p = s.get(Job, job_id).progress
            if p and (p["stage"] > stage or (p["stage"] == stage and p["done"] >= done)):
                if seen is not None:
                    seen["stop_requested_at"] = p
                return stop_event.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    def finish() -> None:
        ended.set()
        watcher.join(timeout=5)
        stop_event.clear()
    return finish
