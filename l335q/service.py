"""TEMPORARY SHIM (branch web): the names of the lead's service layer (issue 12), deleted on `git merge main`."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update

from .config import broker_url
from .db import Job, get_submission, session_scope
from .submit import create_submission, job_counts  # noqa: F401

QUEUE = "l335q"


@dataclass
class Submitted:
    id: int
    job_ids: list[int]
    mode: str


def _dispatch(job_ids, queue, run_here):
    if broker_url():
        from .worker.app import check_broker, enqueue
        check_broker()
        enqueue(job_ids, queue)
        return "service"
    if run_here is not None:
        run_here(job_ids)
    else:
        from .runner import execute_job
        for j in job_ids:
            execute_job(j)
    return "embedded"


def submit(raw: dict, base_dir: Path | None = None, queue: str = QUEUE, url=None, run_here=None) -> Submitted:
    if broker_url():
        from .worker.app import check_broker
        from .specs import expand
        expand(raw, base_dir)
        check_broker()
    sub_id, job_ids = create_submission(raw, base_dir, url)
    return Submitted(sub_id, job_ids, _dispatch(job_ids, queue, run_here))


def cancel(submission_id: int, url=None) -> int:
    with session_scope(url) as s:
        get_submission(s, submission_id)
        return s.execute(update(Job).where(Job.submission_id == submission_id, Job.state == "queued")
                         .values(state="cancelled")).rowcount


def retry(submission_id: int, queue: str = QUEUE, include_running=False, url=None, run_here=None) -> list[int]:
    with session_scope(url) as s:
        get_submission(s, submission_id)
        states = ["failed", "cancelled", "diverged", "queued"] + (["running"] if include_running else [])
        jobs = list(s.scalars(select(Job).where(Job.submission_id == submission_id, Job.state.in_(states))))
        for j in jobs:
            j.state, j.error = "queued", None
        ids = [j.id for j in jobs]
    if ids:
        _dispatch(ids, queue, run_here)
    return ids
