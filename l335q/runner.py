"""Running one job, exactly once, whatever the broker does.

``execute_job`` is the whole life of a job on a worker (or in-process in embedded mode):
  1. claim: in one short transaction, lock the job row; skip it if it is already in a final state
     (a redelivery of a finished job, or a cancelled one); else mark it running, count the attempt;
  2. run the task kind's pure ``run(params, ctx)``; ctx collects metrics and artifacts in memory;
  3. commit: in one transaction, lock the row again; if another delivery finished it meanwhile,
     discard this run's results; else write all metrics, artifacts and the final state together.
A worker that dies between 1 and 3 leaves the job ``running`` with nothing written; the broker
redelivers it (late acks, reject on worker lost) and the next claim runs it from the start.
"""
from __future__ import annotations

import logging
import math
import socket
import time
import traceback
from dataclasses import dataclass, field

from sqlalchemy import select

from . import UserError
from .config import device_override
from .db import FINAL_STATES, Artifact, Job, Metric, make_artifact, session_scope, utcnow
from .tasks import get_kind

log = logging.getLogger("l335q.job")


@dataclass
class JobContext:
    """What a task's ``run`` may use: where to write numbers and images, the device, its inputs."""
    job_id: int
    submission_id: int
    device: str = "auto"
    url: str | None = None
    state: str = "done"
    summary: dict = field(default_factory=dict)
    metrics: list[Metric] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)

    def metric(self, name: str, value: float, *, seed: int | None = None, step: int | None = None) -> None:
        value = float(value)
        self.metrics.append(Metric(name=name, value=value if math.isfinite(value) else None, seed=seed, step=step))

    def artifact(self, name: str, data: bytes, media_type: str = "image/png", *, seed: int | None = None,
                 meta: dict | None = None) -> None:
        self.artifacts.append(make_artifact(name, data, media_type, seed=seed, meta=meta))

    def input_bytes(self, ref: str) -> bytes:
        """The bytes of a file stored with the submission (a spec value ``upload:<sha256>``)."""
        sha = ref.removeprefix("upload:")
        with session_scope(self.url) as s:
            art = s.scalars(select(Artifact).where(Artifact.submission_id == self.submission_id,
                                                   Artifact.job_id.is_(None), Artifact.sha256 == sha)).first()
            if art is None:
                raise UserError(f"input {ref} is not stored with submission {self.submission_id}")
            return art.data

    def log(self, message: str) -> None:
        log.info("job %d: %s", self.job_id, message)


def resolve_device(requested: str = "auto") -> str:
    import torch

    requested = device_override() or requested
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {requested!r} requested but no CUDA device is available")
    return requested


def _locked(s, job_id: int) -> Job | None:
    """The job's row, locked until the session commits (concurrent deliveries queue up behind it)."""
    return s.scalars(select(Job).where(Job.id == job_id).with_for_update()).first()


def _claim(job_id: int, worker: str, url: str | None) -> tuple[str, dict, int] | None:
    with session_scope(url) as s:
        job = _locked(s, job_id)
        if job is None or job.state in FINAL_STATES:
            return None
        job.state, job.worker, job.started_at = "running", worker, utcnow()
        job.attempts += 1
        return job.task, dict(job.params), job.submission_id


def _finish(job_id: int, ctx: JobContext, state: str, error: str | None, seconds: float, url: str | None) -> bool:
    with session_scope(url) as s:
        job = _locked(s, job_id)
        if job is None or job.state in FINAL_STATES:
            return False  # another delivery got there first (or the job was cancelled): keep its result
        job.metrics.extend(ctx.metrics)
        for art in ctx.artifacts:
            art.submission_id = job.submission_id
            job.artifacts.append(art)
        job.state, job.error, job.seconds, job.finished_at = state, error, seconds, utcnow()
        job.result = ctx.summary or None
        return True


def mark_failed(job_id: int, error: str, url: str | None = None) -> None:
    """Record a failure that happened outside the task's own code (best effort: the database may be down)."""
    try:
        with session_scope(url) as s:
            job = _locked(s, job_id)
            if job is not None and job.state not in FINAL_STATES:
                job.state, job.error, job.finished_at = "failed", error, utcnow()
    except Exception:
        log.exception("job %d: could not record its failure", job_id)


def execute_job(job_id: int, worker: str | None = None, url: str | None = None) -> str | None:
    """Claim, run and commit one job. Returns the final state written, or None if nothing was done."""
    worker = worker or socket.gethostname()
    claimed = _claim(job_id, worker, url)
    if claimed is None:
        log.info("job %d: already final or unknown, not run again", job_id)
        return None
    task, params, submission_id = claimed
    ctx = JobContext(job_id=job_id, submission_id=submission_id, device=params.get("device", "auto"), url=url)
    t0 = time.perf_counter()
    error = None
    try:
        ctx.device = resolve_device(ctx.device)
        get_kind(task).run(params, ctx)
        state = ctx.state
    except UserError as exc:
        state, error = "failed", str(exc)
    except Exception:
        state, error = "failed", traceback.format_exc(limit=8)
        log.exception("job %d failed", job_id)
    if state == "failed":
        ctx.metrics.clear()
        ctx.artifacts.clear()
    return state if _finish(job_id, ctx, state, error, time.perf_counter() - t0, url) else None
