"""Turning a spec into a submission with its jobs (one transaction), reusing the seeds already measured."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import insert

from . import reuse
from .db import Job, Submission, db_now, make_artifact, session_scope
from .specs import Expanded, expand
from .tasks import get_kind

MAX_INPUT_BYTES = 50 * 1024 * 1024


@dataclass
class Created:
    """A stored submission: the jobs to run (queued) and the jobs done at once from earlier results."""
    id: int
    job_ids: list[int]
    reused_ids: list[int] = field(default_factory=list)

    def __iter__(self):                 # sub_id, job_ids = create_submission(...)
        return iter((self.id, self.job_ids))


@dataclass
class Prepared:
    """A validated spec with its input files read: jobs' params as stored (files as ``upload:<sha256>``)."""
    exp: Expanded
    inputs: dict[str, bytes]
    jobs: list[dict]
    spec: dict


def read_inputs(exp: Expanded) -> dict[str, bytes]:
    """Read every file the spec names (validated by the kind's ``read_input`` where it has one)."""
    kind = get_kind(exp.task)
    out = {}
    for value, path in exp.files.items():
        reader = getattr(kind, "read_input", None)
        out[value] = reader(path) if reader else path.read_bytes()
    return out


def prepare(raw: dict, base_dir: Path | None = None) -> Prepared:
    exp = expand(raw, base_dir)
    inputs = read_inputs(exp)
    refs = {v: "upload:" + hashlib.sha256(b).hexdigest() for v, b in inputs.items()}

    def swap(value):
        return refs.get(value, value) if isinstance(value, str) else value

    spec = {k: ([swap(x) for x in v] if isinstance(v, list) else swap(v)) for k, v in exp.spec.items()}
    return Prepared(exp, inputs, [{k: swap(v) for k, v in p.items()} for p in exp.jobs], spec)


def create_submission(raw: dict, base_dir: Path | None = None, url: str | None = None,
                      queue: str | None = None) -> Created:
    """Validate ``raw``, then write the submission, its input files and all its jobs in one transaction
    (``queue``: the broker queue the jobs will be published on, None in embedded mode).

    Seeds already measured under a job's result key are not run again (``l335q.reuse``; not with ``fresh``):
    they go in as done jobs with their rows copied. The jobs go in as one bulk insert (multi-row INSERT ...
    RETURNING, in batches): a grid of 10,000 jobs is a handful of statements, not 10,000 ORM objects. Any
    failure rolls the whole submission back."""
    prep = prepare(raw, base_dir)
    exp = prep.exp
    with session_scope(url) as s:
        sub = Submission(task=exp.task, title=exp.title, spec=prep.spec)
        s.add(sub)
        s.flush()
        for value, data in prep.inputs.items():
            s.add(make_artifact(f"input:{Path(value).name}", data, "application/octet-stream",
                                submission_id=sub.id, meta={"source": value}))
        s.flush()
        now = db_now(s)
        common = {"submission_id": sub.id, "task": exp.task, "created_at": now, "queue": queue,
                  "max_attempts": exp.max_attempts, "time_limit_s": exp.time_limit_s}
        queued, done = [], []
        for part in reuse.split(s, exp.task, prep.jobs, exp.fresh):
            if part.reused:
                done.append((part, {**common, "params": {**part.params, "seeds": sorted(part.reused)},
                                    "result_key": part.key, "state": "done", "attempts": 0, "seconds": None,
                                    "finished_at": now, "result": reuse.provenance(part.reused)}))
            if part.to_run:
                queued.append({**common, "params": {**part.params, "seeds": part.to_run}, "result_key": part.key,
                               "state": "queued", "attempts": 0, "queued_at": now})
        jobs = Job.__table__
        ids = list(s.scalars(insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True), queued)) if queued else []
        reused_ids = []
        if done:
            reused_ids = list(s.scalars(insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True),
                                        [row for _, row in done]))
            for job_id, (part, _) in zip(reused_ids, done):
                reuse.copy_rows(s, job_id, sub.id, part.reused)
        return Created(sub.id, ids, reused_ids)
