"""Reports: what the live web view (``l335q api``) and ``l335q report`` show of submissions, as HTML.

``progress(session, ids)``  job counts, ETA and the running jobs' own progress of each submission;
``view(session, id)``       one submission: its spec, job states with each failure's error, the task's table
                            (the rows of ``results --format json``), its figure (the same as ``plot``) and the
                            stored images;
``compare(views)``          several submissions of one task kind: their rows lined up, and the spec keys that
                            differ (only those);
``render(name, **context)`` a Jinja2 template of ``l335q/templates``; ``report_html`` the whole report page.

A static report (``static=True``) embeds every image as a ``data:`` URI and fetches nothing: the file works
opened from disk with no network. The live page links the stored images to the API instead, and refreshes
itself while jobs are unfinished. Stored files show by name (``results.input_names``), never as their hash.
"""
from __future__ import annotations

import base64
import logging
import tempfile
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import __version__
from .db import FINAL_STATES, JOB_STATES, Artifact, Job, Submission, db_now, get_submission
from .results import SubmissionData, _fmt, load, named, table_of
from .status import last_line, notification

log = logging.getLogger("l335q.report")
MAX_IMAGES = 240            # images shown per submission (a note says how many more are stored)
ERROR_CHARS = 4000          # of a failed job's error (the traceback's end is kept)


# ----------------------------------------------------------------------------- progress

@dataclass
class Progress:
    """Where one submission stands: job counts by state, an ETA, and each running job's own progress."""
    counts: dict[str, int]
    eta_s: float | None = None          # from finished jobs' durations; None before the first job finished
    running: list[dict] = field(default_factory=list)   # {"job", "worker", "done", "total", "unit", "lease_age_s"}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def final(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINAL_STATES)

    @property
    def finished(self) -> bool:
        return self.final == self.total

    def segments(self) -> list[tuple[str, int, float]]:
        """(state, jobs, percent of the bar) in a fixed order, for the progress bar."""
        order = ("done", "diverged", "failed", "cancelled", "running", "queued")
        return [(s, self.counts[s], 100.0 * self.counts[s] / self.total) for s in order if self.counts.get(s)]

    def as_json(self) -> dict:
        return {"counts": self.counts, "total": self.total, "finished": self.finished,
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "running": self.running}


def _job_progress(job: Job, now) -> dict:
    """A running job's own progress (``progress`` {"done", "total", "unit"}) and lease age, where recorded."""
    p = job.progress or {}
    beat = job.heartbeat_at
    return {"job": job.id, "worker": job.worker, "done": p.get("done"), "total": p.get("total"), "unit": p.get("unit"),
            "elapsed_s": round((now - job.started_at).total_seconds(), 1) if job.started_at else None,
            "lease_age_s": round((now - beat).total_seconds(), 1) if beat else None}


def eta(queued: int, running: list[dict], durations: list[float]) -> float | None:
    """Seconds until every job is final: the mean duration of finished jobs times the queued jobs, plus what is
    left of each running job (by its own progress where recorded, else by its elapsed time), shared over as many
    workers as jobs are running now (at least one)."""
    if not durations:
        return None if queued or running else 0.0
    mean_s = sum(durations) / len(durations)
    left = 0.0
    for r in running:
        frac = r["done"] / r["total"] if r.get("total") and r.get("done") is not None else None
        elapsed = r.get("elapsed_s") or 0.0
        left += max(0.0, elapsed / frac - elapsed if frac else mean_s - elapsed)
    return (queued * mean_s + left) / max(1, len(running))


def progress(session: Session, submission_ids: list[int]) -> dict[int, Progress]:
    cols = (Job.id, Job.submission_id, Job.state, Job.seconds)
    rows = session.execute(select(*cols).where(Job.submission_id.in_(submission_ids))).all()
    counts: dict[int, dict[str, int]] = {i: {} for i in submission_ids}
    durations: dict[int, list[float]] = defaultdict(list)
    for _, sub_id, state, seconds in rows:
        counts[sub_id][state] = counts[sub_id].get(state, 0) + 1
        if state in ("done", "diverged") and seconds is not None:
            durations[sub_id].append(seconds)
    now = db_now(session)
    running: dict[int, list[dict]] = defaultdict(list)
    for job in session.scalars(select(Job).where(Job.submission_id.in_(submission_ids), Job.state == "running")
                               .order_by(Job.id)):
        running[job.submission_id].append(_job_progress(job, now))
    return {i: Progress({s: counts[i][s] for s in JOB_STATES if s in counts[i]},
                        eta(counts[i].get("queued", 0), running[i], durations[i]), running[i])
            for i in submission_ids}


# ----------------------------------------------------------------------------- one submission

@dataclass
class View:
    id: int
    task: str
    title: str | None
    created_at: str
    spec: dict
    progress: Progress
    jobs: list[dict]
    errors: list[dict]              # {"error": last line, "jobs": [ids]}, one per distinct error
    varying: list[str]              # job parameters that differ between the jobs (shown in the job table)
    table: dict | None              # Table.as_json() plus "columns"; None when the kind has no table
    figure: bytes | None
    notes: list[str]                # what could not be shown, and why
    images: list[dict]              # {"id", "job", "name", "seed", "caption", "data" (static only)}
    previous: int | None = None     # the submission of the same task kind before this one
    notification: str | None = None  # whether its notification went out (l335q.notify)


_FIGURES: OrderedDict = OrderedDict()     # (submission, jobs' states) -> PNG bytes, for pages that refresh
_FIGURES_LOCK = threading.Lock()


def figure_png(data: SubmissionData) -> bytes:
    """The task's figure (``kind.plot``) as PNG bytes; the last few are kept while the jobs' states stay the same."""
    from .tasks import get_kind

    key = (data.id, tuple((j.id, j.state, j.seconds) for j in data.jobs))
    with _FIGURES_LOCK:
        if key in _FIGURES:
            return _FIGURES[key]
    with tempfile.TemporaryDirectory(prefix="l335q-figure-") as tmp:
        get_kind(data.task).plot(data, Path(tmp) / "figure.png")
        png = (Path(tmp) / "figure.png").read_bytes()
    with _FIGURES_LOCK:
        _FIGURES[key] = png
        while len(_FIGURES) > 16:
            _FIGURES.popitem(last=False)
    return png


def plot_to(session: Session, task: str, submission_id: int | None, job_id: int | None, samples: str | None,
            out: Path, where: str = "task") -> None:
    """``l335q plot``: the task's figure of a submission (default: the task's latest), or of one job (per-job
    views such as cls-features) into ``out``."""
    from . import UserError
    from .tasks import get_kind

    kind = get_kind(task, where)
    options = {k: v for k, v in {"job_id": job_id, "samples": samples}.items() if v is not None}
    if job_id is not None and submission_id is None:
        job = session.get(Job, job_id)
        if job is None:
            raise UserError(f"no job with id {job_id}")
        submission_id = job.submission_id
    data = load(session, submission_id, task if hasattr(kind, "SCHEMA") or not submission_id else None)
    if hasattr(kind, "SCHEMA") and not data.done():
        raise UserError(f"submission {data.id} has no finished job to plot yet")
    kind.plot(data, Path(out), **options)


def plot_png(session: Session, task: str, submission_id: int | None = None, job_id: int | None = None,
             samples: str | None = None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="l335q-figure-") as tmp:
        plot_to(session, task, submission_id, job_id, samples, Path(tmp) / "figure.png")
        return (Path(tmp) / "figure.png").read_bytes()


def _varying(params: list[dict]) -> list[str]:
    keys = [k for k in (params[0] if params else {}) if k != "seeds"]
    return [k for k in keys if len({repr(p.get(k)) for p in params}) > 1]


def _seeds(seeds) -> str:
    if not seeds:
        return ""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _images(data: SubmissionData, labels: dict[int, str], static: bool, notes: list[str]) -> list[dict]:
    cols = [Artifact.id, Artifact.job_id, Artifact.name, Artifact.seed, Artifact.meta] + ([Artifact.data] if static else [])
    q = select(*cols).where(Artifact.submission_id == data.id, Artifact.job_id.is_not(None),
                            Artifact.media_type == "image/png").order_by(Artifact.job_id, Artifact.id)
    rows = data.session.execute(q.limit(MAX_IMAGES + 1)).all()
    if len(rows) > MAX_IMAGES:
        notes.append(f"only the first {MAX_IMAGES} stored images are shown")
    out = []
    for row in rows[:MAX_IMAGES]:
        psnr = (row.meta or {}).get("psnr")
        caption = " · ".join(x for x in (row.name, f"seed {row.seed}" if row.seed is not None else "",
                                         f"{psnr:.2f} dB" if isinstance(psnr, (int, float)) else "") if x)
        out.append({"id": row.id, "job": row.job_id, "label": labels.get(row.job_id, ""), "caption": caption,
                    "data": row.data if static else None})
    return out


def view(session: Session, submission_id: int, static: bool = False) -> View:
    """Everything the report shows of one submission (partial while jobs run)."""
    from .tasks import get_kind

    sub: Submission = get_submission(session, submission_id)
    data = load(session, submission_id, None)
    prog = progress(session, [sub.id])[sub.id]
    varying = _varying([j.params for j in data.jobs])
    running = {r["job"]: r for r in prog.running}
    jobs, by_error = [], defaultdict(list)
    for job in session.scalars(select(Job).where(Job.submission_id == sub.id).order_by(Job.id)):
        params = named(job.params, data.names)
        error = (job.error or "").strip()
        if error:
            by_error[last_line(error)].append(job.id)
        jobs.append({"id": job.id, "state": job.state, "params": {k: params.get(k) for k in varying},
                     "seeds": _seeds(params.get("seeds")), "attempts": job.attempts, "worker": job.worker,
                     "seconds": job.seconds, "error": error[-ERROR_CHARS:], "error_line": last_line(error),
                     "progress": running.get(job.id)})
    notes: list[str] = []
    kind = get_kind(sub.task)
    table = figure = None
    try:
        t = table_of(kind, data)     # every key of the JSON rows is a column (the table's own ones first)
        table = {**t.as_json(), "columns": list(dict.fromkeys(t.columns + [k for r in t.rows for k in r]))}
    except Exception as exc:                 # a page must still show the jobs and their errors
        log.exception("submission %d: no table", sub.id)
        notes.append(f"the table could not be computed: {type(exc).__name__}: {exc}")
    if not data.done():
        notes.append("no finished job yet: the table and figure fill in as jobs finish")
    else:
        try:
            figure = figure_png(data)
        except Exception as exc:
            log.exception("submission %d: no figure", sub.id)
            notes.append(f"the figure could not be drawn: {type(exc).__name__}: {exc}")
    labels = {j["id"]: " · ".join([f"job {j['id']}"] + [f"{k} {v}" for k, v in j["params"].items()]
                                  + ([f"seeds {j['seeds']}"] if j["seeds"] else [])) for j in jobs}
    previous = session.scalar(select(func.max(Submission.id)).where(Submission.task == sub.task, Submission.id < sub.id))
    return View(sub.id, sub.task, sub.title, sub.created_at.isoformat(timespec="seconds"), data.spec, prog, jobs,
                [{"error": e, "jobs": ids} for e, ids in by_error.items()], varying, table, figure, notes,
                _images(data, labels, static, notes), previous,
                notification(sub.notify_state, sub.notify_attempts, sub.notify_error, sub.notified_at))


def compare(views: list[View]) -> dict | None:
    """Several submissions of one task kind: the spec keys whose values differ, and every table row with its
    submission's id in front. None for fewer than two submissions or mixed kinds."""
    if len(views) < 2 or len({v.task for v in views}) > 1:
        return None
    keys = list(dict.fromkeys(k for v in views for k in v.spec if k != "title"))
    differ = [k for k in keys if len({repr(v.spec.get(k)) for v in views}) > 1]
    tables = [v.table for v in views if v.table]
    columns = ["submission"] + list(dict.fromkeys(c for t in tables for c in t["columns"]))
    rows = [{"submission": v.id, **r} for v in views if v.table for r in v.table["rows"]]
    return {"keys": differ, "specs": {v.id: {k: v.spec.get(k) for k in differ} for v in views},
            "columns": columns, "rows": rows}


# ----------------------------------------------------------------------------- HTML

def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("l335q", "templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = _fmt
    env.filters["datauri"] = lambda png: "data:image/png;base64," + base64.b64encode(png).decode()
    env.filters["yaml"] = lambda spec: yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)
    env.filters["duration"] = duration
    env.globals["version"] = __version__
    return env


_ENV = None


def render(template: str, **context) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(template).render(**context)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def report_html(session: Session, submission_ids: list[int], static: bool = True, refresh: int | None = None,
                logout: bool = False) -> str:
    """The report page of one or several submissions. ``static=False`` is the API's live page: images linked to
    ``/artifacts/{id}``, cancel and retry buttons, and a reload every ``refresh`` seconds while jobs are unfinished."""
    views = [view(session, i, static) for i in dict.fromkeys(submission_ids)]
    unfinished = not all(v.progress.finished for v in views)
    return render("report.html", views=views, compare=compare(views), static=static, live=not static,
                  refresh=refresh if refresh and not static and unfinished else None, logout=logout)
