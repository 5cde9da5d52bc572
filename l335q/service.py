"""The service layer: what the CLI and the API do to submissions and jobs, in one place.

submit (validate, store, dispatch), dispatch (service mode: publish job ids to the broker; embedded mode:
run them in this process), cancel, retry, job counts, waiting, failures, and the **reaper**. Neither the CLI
nor the API writes a job's state itself. The broker is reached only through ``l335q.worker.app`` (imported
when service mode needs it), so this module runs without Celery in embedded mode.

The reaper makes the database the truth and the broker a hint: it re-queues and re-publishes every
``running`` job whose lease expired (its worker is gone; after ``max_attempts`` losses the job fails with the
reason), and re-publishes every ``queued`` job that waited longer than ``L335Q_QUEUED_GRACE_S`` while its
message is not in the broker (a flushed or restarted Redis). Every worker runs it every ``L335Q_REAP_S``,
one at a time under a PostgreSQL advisory lock; ``l335q reap`` runs it by hand. It also sends the notifications
that are due (``l335q.notify.sweep``: retries, and submissions whose last job ended in the last 10 min).
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Iterable

from sqlalchemy import func, or_, select, text

from . import notify
from .config import broker_url, queued_grace_seconds
from .db import FINAL_STATES, Job, Submission, db_now, ensure_schema, get_submission, session_scope
from .status import last_line
from .runner import execute_job, lease_expired, worker_lost

QUEUE = "l335q"
REAPER_LOCK = 1_335_001          # the PostgreSQL advisory lock key that keeps reapers one at a time


@dataclass
class Submitted:
    id: int
    job_ids: list[int]
    mode: str                    # "service" (published to the broker) or "embedded" (run in this process)
    reused_ids: list[int] = field(default_factory=list)   # jobs done at once from earlier results (l335q.reuse)


def service_mode() -> bool:
    return broker_url() is not None


def _broker():
    from .worker import app    # Celery, only in service mode

    return app


def check_services(url: str | None = None) -> None:
    """One-line UserErrors for an unreachable (or unmigrated) database and, in service mode, broker."""
    ensure_schema(url)
    if service_mode():
        _broker().check_broker()


def submit(raw: dict, base_dir: Path | None = None, queue: str = QUEUE, url: str | None = None,
           run_here: Callable[[list[int]], None] | None = None) -> Submitted:
    """Validate ``raw`` (before touching any service), store the submission and its jobs, dispatch them."""
    from .specs import expand
    from .submit import create_submission

    expand(raw, base_dir)
    check_services(url)
    made = create_submission(raw, base_dir, url=url, queue=queue if service_mode() else None)
    if made.job_ids:
        dispatch(made.job_ids, queue, url, run_here)
    else:                              # every seed reused: the submission ended as it was stored
        notify.settle_jobs(made.reused_ids[:1], url)
    return Submitted(made.id, made.job_ids, "service" if service_mode() else "embedded", made.reused_ids)


def dispatch(job_ids: list[int], queue: str = QUEUE, url: str | None = None,
             run_here: Callable[[list[int]], None] | None = None) -> None:
    """Service mode: publish the job ids. Embedded: ``run_here(job_ids)`` if given, else run them now."""
    if service_mode():
        _broker().enqueue(job_ids, queue)
    elif run_here is not None:
        run_here(job_ids)
    else:
        run_embedded(job_ids, url=url)


def run_embedded(job_ids: Iterable[int], on_job: Callable[[int, str | None], None] | None = None,
                 url: str | None = None, worker: str | None = None) -> None:
    """Run jobs one after another in this process (embedded mode); ``on_job(job_id, state)`` after each."""
    for job_id in job_ids:
        state = execute_job(job_id, worker=worker, url=url)
        notify.settle_jobs([job_id], url)
        if on_job:
            on_job(job_id, state)


def cancel(submission_id: int, url: str | None = None) -> int:
    """Cancel a submission's queued jobs (running ones finish); returns how many."""
    with session_scope(url) as s:
        get_submission(s, submission_id)
        jobs = list(s.scalars(select(Job).where(Job.submission_id == submission_id, Job.state == "queued")
                              .with_for_update()))
        for j in jobs:
            j.state, j.finished_at = "cancelled", db_now(s)
    notify.settle([submission_id], url)
    return len(jobs)


def retry(submission_id: int, queue: str = QUEUE, include_running: bool = False, url: str | None = None,
          run_here: Callable[[list[int]], None] | None = None) -> list[int]:
    """Queue a submission's failed, diverged, cancelled and waiting jobs again (``include_running``: also
    running jobs whose lease expired) with fresh attempts, and dispatch them; returns their ids."""
    states = ["failed", "diverged", "cancelled", "queued"] + (["running"] if include_running else [])
    with session_scope(url) as s:
        get_submission(s, submission_id)
        now = db_now(s)
        jobs = [j for j in s.scalars(select(Job).where(Job.submission_id == submission_id, Job.state.in_(states))
                                     .order_by(Job.id).with_for_update())
                if j.state != "running" or lease_expired(j, now)]
        for j in jobs:
            j.state, j.error, j.attempts, j.queued_at, j.claim = "queued", None, 0, now, None
            j.queue = queue if service_mode() else None
        ids = [j.id for j in jobs]
        if ids:                            # its next end is notified again
            sub = s.get(Submission, submission_id)
            sub.notify_state, sub.notify_at, sub.notify_attempts, sub.notify_error = None, None, 0, None
    if ids and service_mode():
        _broker().check_broker()
    dispatch(ids, queue, url, run_here)
    return ids


def job_counts(submission_id: int, url: str | None = None) -> Counter:
    with session_scope(url) as s:
        rows = s.execute(select(Job.state, func.count()).where(Job.submission_id == submission_id)
                         .group_by(Job.state)).all()
    return Counter(dict(rows))


def wait(submission_id: int, on_progress: Callable[[int, int], None], poll: float = 1.0,
         timeout: float | None = None, url: str | None = None) -> Counter:
    """Poll until every job of the submission is final; ``on_progress(final, total)`` after each poll."""
    t0 = time.monotonic()
    while True:
        counts = job_counts(submission_id, url)
        total = sum(counts.values())
        final = sum(counts[s] for s in FINAL_STATES)
        on_progress(final, total)
        if final >= total:
            return counts
        if timeout is not None and time.monotonic() - t0 > timeout:
            raise TimeoutError(f"submission {submission_id}: {final}/{total} jobs final after {timeout:.0f} s")
        time.sleep(poll)


def failures(submission_id: int, url: str | None = None) -> list[tuple[str, list[int]]]:
    """Distinct errors of the submission's failed and diverged jobs (last line of each) with their job ids."""
    with session_scope(url) as s:
        rows = s.execute(select(Job.id, Job.state, Job.error).where(
            Job.submission_id == submission_id, Job.state.in_(["failed", "diverged"])).order_by(Job.id)).all()
    out: dict[str, list[int]] = defaultdict(list)
    for job_id, state, error in rows:
        out[last_line(error) or ("diverged: the loss became non-finite" if state == "diverged" else "failed")].append(job_id)
    return list(out.items())


# ----------------------------------------------------------------------------- the reaper

@dataclass
class Reaped:
    requeued: list[int] = field(default_factory=list)      # running jobs whose worker was lost
    failed: list[int] = field(default_factory=list)        # ... lost max_attempts times
    republished: list[int] = field(default_factory=list)   # queued jobs whose message was gone
    notified: list[int] = field(default_factory=list)      # submissions whose notification went out (l335q.notify)
    skipped: bool = False                                  # another reaper held the lock

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.republished or self.notified)

    def text(self) -> str:
        if self.skipped:
            return "another reaper is running; nothing done"
        return (f"{len(self.requeued)} jobs re-queued (worker lost), {len(self.failed)} failed (worker lost too "
                f"often), {len(self.republished)} queued jobs re-published (no message waiting in the queue)"
                + (f", {len(self.notified)} notifications sent" if self.notified else ""))


def _lock(s) -> bool:
    if s.get_bind().dialect.name != "postgresql":
        return True                        # SQLite: one writer at a time anyway
    return bool(s.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": REAPER_LOCK}).scalar())


def reap(url: str | None = None, grace_s: float | None = None) -> Reaped:
    """Re-queue jobs whose worker is gone and re-publish queued jobs whose message is gone (see module doc)."""
    grace = timedelta(seconds=queued_grace_seconds() if grace_s is None else grace_s)
    out = Reaped()
    publish: dict[str, list[int]] = defaultdict(list)
    with session_scope(url) as s:
        if not _lock(s):
            out.skipped = True
            return out
        now = db_now(s)
        for job in s.scalars(select(Job).where(Job.state == "running").with_for_update(skip_locked=True)):
            if lease_expired(job, now):
                (out.failed if worker_lost(job, now) == "failed" else out.requeued).append(job.id)
                if job.state == "queued" and service_mode():
                    publish[job.queue or QUEUE].append(job.id)
        if service_mode():
            stale = list(s.scalars(select(Job).where(
                Job.state == "queued", or_(Job.queued_at < now - grace,
                                           (Job.queued_at.is_(None)) & (Job.created_at < now - grace)))
                .with_for_update(skip_locked=True)))
            waiting = _broker().queued_job_ids({j.queue or QUEUE for j in stale}) if stale else set()
            for job in stale:
                if waiting is None or job.id not in waiting:
                    job.queued_at = now
                    out.republished.append(job.id)
                    publish[job.queue or QUEUE].append(job.id)
    for queue, ids in publish.items():
        _broker().enqueue(ids, queue)
    out.notified = notify.sweep(url)
    return out

