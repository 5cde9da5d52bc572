"""From the database to tables: what every task kind's ``results`` builds on.

``SubmissionData`` holds a submission's jobs; their metrics (one SELECT per metric name, see ``MetricStore``)
and artifacts load on demand;
``Table`` is what a kind returns; ``render`` prints it as a table, CSV or JSON.
Every table says how many seeds each number rests on and their spread (``seeds`` and ``*_sd`` columns).
"""
from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePath

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db import Artifact, Job, Metric, Submission, get_submission


class MetricStore:
    """A submission's metric rows, fetched one name at a time for all its jobs: the first ``rows(job, name)``
    of a name runs one SELECT for that name over every job of the submission; later calls read the cache.
    A table that needs only final values never reads the loss curves (tens of rows per job)."""

    def __init__(self, session: Session, submission_ids: int | list[int]):
        self.session = session
        self.submission_ids = submission_ids if isinstance(submission_ids, list) else [submission_ids]
        self.by_name: dict[str, dict[int, list[tuple[int | None, int | None, float | None]]]] = {}

    def rows(self, job_id: int, name: str) -> list[tuple[int | None, int | None, float | None]]:
        """(seed, step, value) of ``name`` in job ``job_id``, in the order they were written."""
        if name not in self.by_name:
            by_job: dict[int, list] = defaultdict(list)
            q = (select(Metric.job_id, Metric.seed, Metric.step, Metric.value).join(Job, Job.id == Metric.job_id)
                 .where(Job.submission_id.in_(self.submission_ids), Metric.name == name)
                 .order_by(Metric.job_id, Metric.id))
            for job, seed, step, value in self.session.connection().execute(q):
                by_job[job].append((seed, step, value))
            self.by_name[name] = by_job
        return self.by_name[name].get(job_id, [])


@dataclass
class JobData:
    id: int
    params: dict
    state: str
    seconds: float | None
    error: str | None
    result: dict | None
    # the job's metrics: read on demand from the database (``load``), or given as (seed, step, name, value) rows
    metrics: MetricStore | list[tuple[int | None, int | None, str, float | None]] = field(repr=False)
    only: set[int] | None = None     # a merged view: the seeds this job stands for (the others came earlier)

    def rows(self, name: str) -> list[tuple[int | None, int | None, float | None]]:
        """(seed, step, value) of every ``name`` metric of this job, in the order they were written."""
        if isinstance(self.metrics, MetricStore):
            rows = self.metrics.rows(self.id, name)
        else:
            rows = [(seed, step, v) for seed, step, n, v in self.metrics if n == name]
        return rows if self.only is None else [r for r in rows if r[0] is None or r[0] in self.only]

    def final(self, name: str) -> dict[int, float | None]:
        """seed -> the value of ``name`` recorded without a step (or at the last step)."""
        out: dict[int, tuple[int, float | None]] = {}
        for seed, step, v in self.rows(name):
            key = -1 if step is None else step
            if seed not in out or key >= out[seed][0] or step is None:
                out[seed] = (10**9 if step is None else key, v)
        return {s: v for s, (_, v) in out.items()}

    def curve(self, name: str) -> dict[int, list[tuple[int, float | None]]]:
        """seed -> [(step, value), ...] sorted by step."""
        out: dict[int, list] = defaultdict(list)
        for seed, step, v in self.rows(name):
            if step is not None:
                out[seed].append((step, v))
        return {s: sorted(c) for s, c in out.items()}


@dataclass
class SubmissionData:
    id: int
    task: str
    title: str | None
    spec: dict
    jobs: list[JobData]
    session: Session | None = None
    names: dict[str, str] = field(default_factory=dict)   # upload:<sha256> -> the name shown (input_names)
    merged: list[int] = field(default_factory=list)      # the submissions a merged view reads (``load(merge=)``)

    def artifacts(self, job_id: int | None = None, name_prefix: str = "") -> list[Artifact]:
        q = select(Artifact).where(Artifact.submission_id.in_(self.merged or [self.id]))
        if job_id is not None:
            q = q.where(Artifact.job_id == job_id)
        if name_prefix:
            q = q.where(Artifact.name.startswith(name_prefix))
        return list(self.session.scalars(q.order_by(Artifact.id)))

    def done(self) -> list[JobData]:
        return [j for j in self.jobs if j.state in ("done", "diverged")]

    def ref(self, value: str) -> str:
        """The value stored behind a shown file name (``upload:<sha256>``); any other value unchanged."""
        return next((r for r, n in self.names.items() if n == value), value)

    def input_bytes(self, value: str) -> bytes:
        """The bytes of a file stored with the submission, by its shown name or its ``upload:<sha256>``."""
        sha = self.ref(value).removeprefix("upload:")
        return next(a.data for a in self.artifacts() if a.job_id is None and a.sha256 == sha)


def load(session: Session, submission_id: int | None, task: str | None, merge: bool = False) -> SubmissionData:
    """A submission and its jobs (one SELECT, no ORM objects); stored files show by name (``input_names``) in
    spec and params; metrics are read per name when a table asks for them (``MetricStore``), so ``session``
    must stay open while the data are used.

    ``merge``: every submission of the task with the same title (one study grown over several submissions), read
    as one, newest first, each (cell, seed) counted once: a seed done in a newer submission hides the same seed
    of the same cell in an older one (a reused seed is such a copy)."""
    sub: Submission = get_submission(session, submission_id, task)
    subs = [sub]
    if merge:
        title = Submission.title.is_(None) if sub.title is None else Submission.title == sub.title
        subs = list(session.scalars(select(Submission).where(Submission.task == sub.task, title,
                                                             Submission.id <= sub.id).order_by(Submission.id.desc())))
    ids = [x.id for x in subs]
    store = MetricStore(session, ids)
    names = {r: n for x in reversed(subs) for r, n in input_names(session, x.id).items()}
    q = (select(Job.id, Job.params, Job.state, Job.seconds, Job.error, Job.result)
         .where(Job.submission_id.in_(ids)).order_by(Job.submission_id.desc(), Job.id))
    jobs = [JobData(id_, named(params, names), state, seconds, error, result, store)
            for id_, params, state, seconds, error, result in session.connection().execute(q)]
    return SubmissionData(id=sub.id, task=sub.task, title=sub.title, spec=named(sub.spec, names), session=session,
                          names=names, jobs=_seeds_once(jobs) if merge else jobs, merged=ids if merge else [])


def _seeds_once(jobs: list[JobData]) -> list[JobData]:
    """Jobs of several submissions with each (cell, seed) once: done jobs first, in the given order."""
    seen: dict[str, set[int]] = defaultdict(set)
    out = []
    for job in sorted(jobs, key=lambda j: j.state not in ("done", "diverged")):
        cell = json.dumps({k: v for k, v in job.params.items() if k != "seeds"}, sort_keys=True, default=str)
        seeds = [x for x in job.params.get("seeds") or [] if x not in seen[cell]]
        if not seeds:
            continue
        seen[cell].update(seeds)
        if len(seeds) < len(job.params["seeds"]):
            job.params, job.only = {**job.params, "seeds": seeds}, set(seeds)
        out.append(job)
    return out


def table_of(kind, data: SubmissionData) -> "Table":
    """``kind.results(data)`` with where its rows came from: the submissions a merged view reads, and the seeds
    reused from earlier submissions (``l335q.reuse``)."""
    table = kind.results(data)
    if data.merged:
        table.notes.append(f"merged: submissions {', '.join(map(str, sorted(data.merged)))} (title {data.title!r}), "
                           "each cell's seed counted once")
    reused = [j.result["reused_from"] for j in data.jobs if (j.result or {}).get("reused_from")]
    if reused:
        subs = sorted({i for r in reused for i in r["submissions"]})
        table.notes.append(f"{sum(r['seeds'] for r in reused):,} seeds ({len(reused):,} jobs) reused from "
                           f"submission{'s' if len(subs) > 1 else ''} {', '.join(map(str, subs))} (same params, "
                           "inputs and engine version; `submit --fresh` recomputes)")
    return table


# ----------------------------------------------------------------------------- names of stored files

def input_names(session: Session, submission_id: int) -> dict[str, str]:
    """``upload:<sha256>`` -> the file's name as the spec gave it (``dusk.png``), for every file stored with the
    submission. A different file with a name already taken is told apart as ``dusk.png (2)``, ``(3)`` ..."""
    rows = session.execute(select(Artifact.sha256, Artifact.name, Artifact.meta)
                           .where(Artifact.submission_id == submission_id, Artifact.job_id.is_(None),
                                  Artifact.name.startswith("input:")).order_by(Artifact.id)).all()
    names: dict[str, str] = {}
    for sha, art_name, meta in rows:
        ref = "upload:" + sha
        if ref in names:
            continue
        base = PurePath(str((meta or {}).get("source") or art_name.removeprefix("input:"))).name
        name, n = base, 1
        while name in names.values():
            n += 1
            name = f"{base} ({n})"
        names[ref] = name
    return names


def named(value, names: dict[str, str]):
    """``value`` (a spec, a job's params, a list or one value) with every stored file's ref replaced by its name."""
    if not names:                      # no stored files (sample images): nothing to replace, in any of 10,000 jobs
        return value
    if isinstance(value, dict):
        return {k: named(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [named(v, names) for v in value]
    return names.get(value, value) if isinstance(value, str) else value


@dataclass
class Table:
    """A kind's rows. Every row key is one of ``columns`` (text, CSV and JSON) or of ``detail`` (JSON only, e.g.
    per-seed lists); a key in neither raises, so no measured value drops out of a table unnoticed."""
    task: str
    columns: list[str]
    rows: list[dict]
    submission: int | None = None
    summary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        lost = {k for r in self.rows for k in r} - set(self.columns) - set(self.detail)
        if lost:
            raise ValueError(f"table {self.task}: row keys {sorted(lost)} are neither columns nor detail")

    def as_json(self) -> dict:
        return {"task": self.task, "submission": self.submission, "rows": self.rows,
                **({"summary": self.summary} if self.summary else {}), **({"notes": self.notes} if self.notes else {})}


# ----------------------------------------------------------------------------- statistics helpers

def unfinished_note(data: "SubmissionData", missing: str = "cells") -> list[str]:
    """[] when every job is final and done, else one note saying how many are missing from the table."""
    pending = len(data.jobs) - len(data.done())
    return [f"{pending} of {len(data.jobs)} jobs not done (queued, running, failed or cancelled): their {missing} "
            "are missing"] if pending else []


def finite(values) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean(values) -> float | None:
    v = finite(values)
    return statistics.fmean(v) if v else None


def gap_se(sd_a: float, n_a: int, sd_b: float, n_b: int) -> float:
    """Standard error of the difference of two means, from each side's sample sd and count."""
    return math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b)


def sd(values) -> float | None:
    """Sample standard deviation; 0.0 for one value (no spread measured), None for none."""
    v = finite(values)
    return statistics.stdev(v) if len(v) > 1 else (0.0 if v else None)


def mean_curve(curves: list[list[tuple[int, float | None]]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and sd over seeds at each step that every curve has."""
    if not curves:
        return [], [], []
    steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    by = [dict(c) for c in curves]
    m = [mean([c[s] for c in by]) for s in steps]
    d = [sd([c[s] for c in by]) for s in steps]
    return steps, m, d


def group_jobs(jobs: list[JobData], keys: tuple[str, ...]) -> dict[tuple, list[JobData]]:
    out: dict[tuple, list[JobData]] = defaultdict(list)
    for j in jobs:
        out[tuple(j.params.get(k) for k in keys)].append(j)
    return dict(out)


# ----------------------------------------------------------------------------- rendering

def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10000 else str(v)
    return str(v)


def render(table: Table, fmt: str = "table") -> str:
    """``table`` as text (columns, notes, summary), CSV (columns) or JSON (every row key)."""
    table.check()
    if fmt == "json":
        return json.dumps(table.as_json(), indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=table.columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(table.rows)
        return buf.getvalue().rstrip("\n")
    cells = [[_fmt(r.get(c)) for c in table.columns] for r in table.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(table.columns)]
    wide = {i for i, c in enumerate(table.columns) if c in ("diagnosis", "verdict")}
    line = lambda vals: "  ".join(v if i in wide else v.rjust(widths[i]) for i, v in enumerate(vals)).rstrip()
    head = f"{table.task} — submission {table.submission}" if table.submission is not None else table.task
    out = [head, line(table.columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    if not table.rows:
        out.append("(no finished jobs yet)")
    for n in table.notes:
        out.append(f"note: {n}")
    if table.summary:
        out.append("")
        out += [f"* {s}" for s in table.summary]
    return "\n".join(out)
