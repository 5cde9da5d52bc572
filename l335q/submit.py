"""Turning a spec into a submission with its jobs (one transaction)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import insert

from .db import Job, Submission, db_now, make_artifact, session_scope
from .specs import Expanded, expand
from .tasks import get_kind

MAX_INPUT_BYTES = 50 * 1024 * 1024


def read_inputs(exp: Expanded) -> dict[str, bytes]:
    """Read every file the spec names (validated by the kind's ``read_input`` where it has one)."""
    kind = get_kind(exp.task)
    out = {}
    for value, path in exp.files.items():
        reader = getattr(kind, "read_input", None)
        out[value] = reader(path) if reader else path.read_bytes()
    return out


def create_submission(raw: dict, base_dir: Path | None = None, url: str | None = None,
                      queue: str | None = None) -> tuple[int, list[int]]:
    """Validate ``raw``, then write the submission, its input files and all its jobs in one transaction
    (``queue``: the broker queue the jobs will be published on, None in embedded mode).

    The jobs go in as one bulk insert (multi-row INSERT ... RETURNING, in batches): a grid of 10,000 jobs
    is a handful of statements, not 10,000 ORM objects. Any failure rolls the whole submission back."""
    exp = expand(raw, base_dir)
    inputs = read_inputs(exp)
    refs = {v: "upload:" + hashlib.sha256(b).hexdigest() for v, b in inputs.items()}

    def swap(value):
        return refs.get(value, value) if isinstance(value, str) else value

    with session_scope(url) as s:
        sub = Submission(task=exp.task, title=exp.title,
                         spec={k: ([swap(x) for x in v] if isinstance(v, list) else swap(v)) for k, v in exp.spec.items()})
        s.add(sub)
        s.flush()
        for value, data in inputs.items():
            s.add(make_artifact(f"input:{Path(value).name}", data, "application/octet-stream",
                                submission_id=sub.id, meta={"source": value}))
        s.flush()
        now = db_now(s)
        rows = [{"submission_id": sub.id, "task": exp.task, "params": {k: swap(v) for k, v in p.items()},
                 "state": "queued", "attempts": 0, "created_at": now, "queue": queue, "queued_at": now,
                 "max_attempts": exp.max_attempts, "time_limit_s": exp.time_limit_s} for p in exp.jobs]
        jobs = Job.__table__
        return sub.id, list(s.scalars(insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True), rows))

