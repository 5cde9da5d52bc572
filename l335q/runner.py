"""Running one job, exactly once, whatever happens to its worker, the broker or the database.

The database is the truth; a broker message only says "look at job N now". ``execute_job`` is the whole life
of one delivery of a job on a worker (or in-process in embedded mode):
  1. claim: in one short transaction, lock the job's row and take it only if it is ``queued``, or ``running``
     with an expired lease (its worker is gone); a final job, or one whose lease is alive, is left alone, so a
     duplicated or re-published message costs nothing. A job whose worker was lost ``max_attempts`` times ends
     ``failed`` instead. Taking it: state ``running``, a fresh claim token, the lease starts, one more attempt;
  2. run the task kind's pure ``run(params, ctx)`` while a thread renews the lease (and writes progress) every
     lease / 3 seconds; training engines resume from and save checkpoints through ``ctx.checkpoints``;
  3. commit: lock the row again; only the holder of the claim token writes all metrics, artifacts and the
     final state together, and deletes the job's checkpoints.
A worker asked to stop (SIGTERM) saves a checkpoint and hands the job back (``released``: queued again, the
attempt not counted). A worker that dies leaves the lease to expire; the reaper (``l335q.service.reap``)
re-queues the job and it resumes from its last checkpoint. The heartbeat is also the job's **watchdog**: a job
that gives no sign of progress for ``L335Q_STALL_S`` (and 10 x its longest step; before its first, 120 s too) is
stalled — re-queued as a lost attempt with the reason (failed after ``max_attempts``), then ``on_stall`` (the worker: publish it again,
kill this pool process); past its **time limit** a job saves a checkpoint and ends ``failed`` with the reason
(``l335q retry`` resumes it), and one that does not stop by itself within ``TIME_LIMIT_GRACE_S`` is ended so.
Lease ages are read on the database's clock (``db.db_now``).
**Packs** (``l335q.packing``): right after step 1, a job of a kind that packs also claims queued jobs of its
shape, each with its own claim token and lease (one heartbeat renews them all); step 2 runs them as one
batched run, not checkpointed; step 3 commits each job by its own claim; a stop hands every one of them back.
"""
from __future__ import annotations

import logging
import math
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, select, update

from . import UserError
from .checkpoints import NO_CHECKPOINTS, PLAN_STAGE, Interrupted, LeaseLost
from .config import (STALL_FACTOR, STARTUP_STALL_S, checkpoint_seconds, device_override, lease_seconds, max_attempts,
                     stall_seconds, time_limit_seconds)
from .db import FINAL_STATES, Artifact, Checkpoint, Job, Metric, db_now, make_artifact, session_scope, with_retries
from .reuse import result_key
from .tasks import get_kind

log = logging.getLogger("l335q.job")
RELEASED = "released"       # execute_job's answer when the job was handed back for another worker
PACKED = "p:"               # the claim tokens of a pack's jobs start with this (a loss then is not the job's own)
TIME_LIMIT_GRACE_S = 60.0   # past its time limit, a job that has not stopped at a checkpoint after this is ended


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
    checkpoints: object = NO_CHECKPOINTS
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


def lease_expired(job: Job, now) -> bool:
    if job.heartbeat_at is None:
        return True
    return job.heartbeat_at + timedelta(seconds=job.lease_s or lease_seconds()) < now


def worker_lost(job: Job, now, reason: str | None = None) -> str:
    """A running job whose lease expired (or, with ``reason``, that stalled): ``failed`` after max_attempts losses,
    else back to ``queued``. A loss while the job ran in a pack is not counted (the pack's size, or any job of it,
    may have killed the worker): the job goes back to ``queued``, and its ``error`` (set from now on) keeps it out
    of packs: it runs alone."""
    limit = job.max_attempts or max_attempts()
    lost = reason or f"worker {job.worker or '?'} lost"
    if (job.claim or "").startswith(PACKED):
        job.state, job.queued_at, job.attempts = "queued", now, max(0, job.attempts - 1)
        job.error = f"{lost} while this job ran in a pack (not counted; it runs alone next)"
    elif job.attempts >= limit:
        job.state, job.finished_at = "failed", now
        job.error = (f"{reason} (attempt {job.attempts} of {limit})" if reason else
                     f"worker lost {job.attempts} times; last on {job.worker or 'an unknown host'}")
    else:
        job.state, job.queued_at = "queued", now
        job.error = f"{lost} (attempt {job.attempts} of {limit})"
    job.claim, job.heartbeat_at, job.progress = None, None, None
    return job.state


@dataclass
class Claim:
    task: str
    params: dict
    submission_id: int
    token: str
    resumed: bool
    attempt: int = 1            # this claim's attempt (1: no worker was lost on the job alone before)
    queue: str | None = None    # the broker queue the job was published on
    lost_before: bool = False   # a worker was lost while running this job (alone or packed): it runs alone
    time_limit_s: float | None = None


def new_token(packed: bool = False) -> str:
    """A claim token (32 characters, the column's width); a pack's start with ``PACKED``."""
    return PACKED + uuid.uuid4().hex[len(PACKED):] if packed else uuid.uuid4().hex


def take(s, job: Job, worker: str, lease_s: float, now, packed: bool = False) -> Claim:
    """Take a locked, claimable job in session ``s``: ``running``, a fresh claim token, its lease starts."""
    token = new_token(packed)
    job.state, job.worker, job.started_at, job.claim = "running", worker, now, token
    job.heartbeat_at, job.lease_s, job.progress = now, lease_s, None
    job.attempts += 1
    resumed = s.scalar(select(Checkpoint.id).where(Checkpoint.job_id == job.id, Checkpoint.stage != PLAN_STAGE)
                       .limit(1)) is not None
    return Claim(job.task, dict(job.params), job.submission_id, token, resumed, job.attempts, job.queue,
                 lost_before=job.error is not None, time_limit_s=job.time_limit_s or time_limit_seconds())


def _claim(job_id: int, worker: str, lease_s: float, url: str | None) -> Claim | None:
    with session_scope(url) as s:
        job = _locked(s, job_id)
        if job is None or job.state in FINAL_STATES:
            log.info("job %d: already final or unknown, not run again", job_id)
            return None
        now = db_now(s)
        if job.state == "running":
            if not lease_expired(job, now):
                log.info("job %d: held by %s (lease alive), this delivery is dropped", job_id, job.worker)
                return None
            if worker_lost(job, now) == "failed":
                return None
        return take(s, job, worker, lease_s, now)


class Heartbeat(threading.Thread):
    """Renews the leases of claimed jobs ({job id: claim token}: one job, or a pack) and writes their progress,
    every lease / 3 seconds until stopped. A database that is briefly away is retried at the next beat; a job
    whose claim is lost is dropped from the beat, and ``lost`` is set once no job is held any more. It is also
    the watchdog (module doc): with ``on_stall`` (a worker's), a stalled job, or one past its time limit that
    does not stop, is given up (``give_up``) and ``on_stall(ids re-queued)`` is called."""

    def __init__(self, holds: dict[int, str], lease_s: float, ckpt, url: str | None, worker: str = "?",
                 on_stall=None):
        super().__init__(daemon=True, name=f"l335q-lease-{min(holds)}")
        self.holds, self.lease_s, self.ckpt, self.url = dict(holds), lease_s, ckpt, url
        self.worker, self.on_stall = worker, on_stall
        self.done = threading.Event()
        self.lost = False

    def run(self) -> None:
        warned = False
        while not self.done.wait(self.lease_s / 3):
            try:
                with session_scope(self.url) as s:
                    progress, now = getattr(self.ckpt, "progress", None), db_now(s)
                    gone = [job_id for job_id, token in self.holds.items()
                            if not s.execute(update(Job).where(Job.id == job_id, Job.claim == token)
                                             .values(heartbeat_at=now, progress=progress)).rowcount]
                for job_id in gone:
                    log.warning("job %d: this worker no longer holds it", job_id)
                    del self.holds[job_id]
                if not self.holds:
                    self.lost = True
                    return
                reason, final = self.verdict()
                if reason and self.on_stall is None:
                    if not warned:
                        log.warning("jobs %s: %s (no watchdog here: embedded mode)", sorted(self.holds), reason)
                    warned = True
                elif reason:
                    log.error("jobs %s: %s: giving them up", sorted(self.holds), reason)
                    self.on_stall(self.give_up(reason, final))
                    return
            except Exception as exc:   # the database restarting: the next beat tries again
                log.warning("jobs %s: lease not renewed (%s)", sorted(self.holds), str(exc).splitlines()[0])

    def verdict(self) -> tuple[str | None, bool]:
        """(why the jobs are given up, whether they end failed), or (None, False) while they are healthy."""
        ckpt = self.ckpt
        if not hasattr(ckpt, "stalled_for"):
            return None, False
        if ckpt.over_time(TIME_LIMIT_GRACE_S):
            return (f"time limit {ckpt.limit_s:g} s exceeded at {where(ckpt.progress)} on {self.worker}; it did not "
                    f"stop at a checkpoint within {TIME_LIMIT_GRACE_S:.0f} s"), True
        idle = ckpt.stalled_for(stall_seconds(), STALL_FACTOR, STARTUP_STALL_S)
        if idle is not None:
            return f"stalled {idle:.0f} s at {where(ckpt.progress)} on {self.worker}", False
        return None, False

    def give_up(self, reason: str, final: bool) -> list[int]:
        """Every held job ended ``failed`` (``final``) or handed on as a lost attempt; the ids re-queued."""
        requeued = []
        with session_scope(self.url) as s:
            now = db_now(s)
            for job_id, token in self.holds.items():
                job = _locked(s, job_id)
                if job is None or job.claim != token:
                    continue
                if final:
                    job.state, job.error, job.finished_at = "failed", reason, now
                    job.claim, job.heartbeat_at, job.progress = None, None, None
                elif worker_lost(job, now, reason) == "queued":
                    requeued.append(job_id)
        return requeued

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)


def where(progress: dict | None) -> str:
    """``step 4,100 of 10,000`` (or the stage's unit) from a job's progress."""
    if not progress:
        return "its start (no progress reported yet)"
    return f"{progress['unit']} {progress['done']:,} of {progress['total']:,}"


def _finish(job_id: int, ctx: JobContext, token: str, state: str, error: str | None, seconds: float,
            url: str | None, keep_checkpoints: bool = False) -> bool:
    with session_scope(url) as s:
        job = _locked(s, job_id)
        if job is None or job.claim != token:
            return False  # the job was given to another worker (or cancelled): keep what that one writes
        s.add_all(Metric(job_id=job_id, name=m.name, value=m.value, seed=m.seed, step=m.step) for m in ctx.metrics)
        s.add_all(make_artifact(a.name, a.data, a.media_type, seed=a.seed, meta=a.meta, job_id=job_id,
                                submission_id=job.submission_id) for a in ctx.artifacts)
        if not keep_checkpoints:
            s.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        job.state, job.error, job.seconds, job.finished_at = state, error, seconds, db_now(s)
        job.result = ctx.summary or None
        job.result_key = result_key(job.task, job.params)       # under the code that ran it (l335q.reuse)
        job.claim, job.heartbeat_at, job.progress = None, None, None
        return True


def _release(job_id: int, token: str, url: str | None) -> bool:
    """Hand a job back after a stop request: queued again, this attempt not counted (it was not a loss)."""
    with session_scope(url) as s:
        job = _locked(s, job_id)
        if job is None or job.claim != token:
            return False
        job.state, job.queued_at, job.error = "queued", db_now(s), None
        job.claim, job.heartbeat_at, job.progress = None, None, None
        job.attempts = max(0, job.attempts - 1)
        return True


def mark_failed(job_id: int, error: str, url: str | None = None) -> None:
    """Record a failure that happened outside the task's own code (best effort: the database may be down)."""
    try:
        with session_scope(url) as s:
            job = _locked(s, job_id)
            if job is not None and job.state not in FINAL_STATES:
                job.state, job.error, job.finished_at = "failed", error, db_now(s)
                job.claim, job.heartbeat_at, job.progress = None, None, None
    except Exception:
        log.exception("job %d: could not record its failure", job_id)


def _run_task(run, ctxs: list[JobContext]) -> str | None:
    """``run()`` with every context's device resolved; the error to record when it failed, None when it ran."""
    try:
        for ctx in ctxs:
            ctx.device = resolve_device(ctx.device)
        run()
        return None
    except (Interrupted, LeaseLost):
        raise
    except UserError as exc:
        return str(exc)
    except Exception:
        log.exception("job %s failed", ", ".join(str(c.job_id) for c in ctxs))
        return traceback.format_exc(limit=8)


def _commit(job_id: int, ctx: JobContext, token: str, error: str | None, seconds: float, url: str,
            keep_checkpoints: bool = False) -> str | None:
    """Write one job's outcome by its claim: the state written, or None when the claim was lost."""
    state = "failed" if error is not None else ctx.state
    if state == "failed":
        ctx.metrics.clear()
        ctx.artifacts.clear()
    wrote = with_retries(lambda: _finish(job_id, ctx, token, state, error, seconds, url, keep_checkpoints),
                         what=f"job {job_id}: commit")
    return state if wrote else None


def execute_job(job_id: int, worker: str | None = None, url: str | None = None,
                released: list[int] | None = None, on_stall=None) -> str | None:
    """Claim, run and commit one job, packed with queued jobs of its shape where its kind allows (``packing``).
    Returns the final state written for ``job_id``, ``RELEASED`` when it was handed back after a stop request,
    or None when nothing was done (final already, held by a live worker, lease lost). ``released`` (a list)
    gets the ids of every job handed back (a pack hands all its jobs back): publish them again. ``on_stall(ids)``
    (a worker's; None in embedded mode: a stall is only logged): called from the heartbeat thread once the jobs
    stalled, or overran their time limit, with the ids re-queued; it must publish them and end this process."""
    from .checkpoints import Checkpoints
    from .config import database_url
    from .packing import Unsaved, claim_packmates, run_packed

    worker = worker or socket.gethostname()
    url = url or database_url()      # one database for the whole job (its lease thread included)
    lease_s = lease_seconds()
    claim = with_retries(lambda: _claim(job_id, worker, lease_s, url), what=f"job {job_id}: claim")
    if claim is None:
        return None
    claims = claim_packmates(job_id, claim, worker, lease_s, url) or {job_id: claim}
    ctxs = {i: JobContext(job_id=i, submission_id=c.submission_id, device=c.params.get("device", "auto"), url=url)
            for i, c in claims.items()}
    ctx = ctxs[job_id]
    if len(claims) > 1:
        ctx.log(f"packed with jobs {sorted(claims)[:20]} ({len(claims)} jobs, one batched run, not checkpointed)")
        ckpt = Unsaved()
        run = lambda: run_packed(claim.task, [c.params for c in claims.values()], list(ctxs.values()))  # noqa: E731
    else:
        ckpt = Checkpoints(job_id, claim.token, url, checkpoint_seconds())
        run = lambda: get_kind(claim.task).run(claim.params, ctx)                                    # noqa: E731
        if claim.resumed:
            ctx.log("resuming from its checkpoint")
    for c in ctxs.values():
        c.checkpoints = ckpt
    ckpt.limit(claim.time_limit_s)
    beat = Heartbeat({i: c.token for i, c in claims.items()}, lease_s, ckpt, url, worker, on_stall)
    beat.start()
    t0 = time.perf_counter()
    try:
        error = _run_task(run, list(ctxs.values()))
    except Interrupted as exc:
        if ckpt.over_time():
            beat.stop()
            return _over_time(job_id, claims, ctxs, ckpt, time.perf_counter() - t0, url)
        ctx.log(f"{exc}; checkpoint saved, handing the job back" if len(claims) == 1 else
                f"{exc}; handing back the {len(claims)} jobs of its pack")
        beat.stop()
        back = [i for i, c in claims.items()
                if with_retries(lambda i=i, c=c: _release(i, c.token, url), what=f"job {i}: release")]
        if released is not None:
            released.extend(back)
        return RELEASED if job_id in back else None
    except LeaseLost as exc:
        ctx.log(str(exc))
        beat.stop()
        return None
    beat.stop()
    seconds = (time.perf_counter() - t0) / len(claims)     # a packed job's share (durations feed ETAs, plans)
    for c in ctxs.values():
        c.summary = {**(c.summary or {}), **ckpt.notes}
    states = {i: _commit(i, ctxs[i], c.token, error, seconds, url) for i, c in claims.items()}
    return states[job_id]


def _over_time(job_id: int, claims: dict, ctxs: dict, ckpt, seconds: float, url: str) -> str | None:
    """Jobs stopped at their time limit: ``failed`` with the reason, their checkpoints kept (a retry resumes)."""
    saved = "checkpoint kept: `l335q retry` resumes it" if len(claims) == 1 else f"in a pack of {len(claims)}: not saved"
    error = f"time limit {ckpt.limit_s:g} s exceeded at {where(ckpt.progress)} ({saved})"
    ctxs[job_id].log(error)
    states = {i: _commit(i, ctxs[i], c.token, error, seconds, url, keep_checkpoints=True) for i, c in claims.items()}
    return states[job_id]
