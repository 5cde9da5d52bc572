"""The HTTP API: a thin layer over the core (specs, service, results, report) for clients without the CLI.

    POST /submissions                  a spec (YAML or JSON body) -> {"id", "jobs", "mode", ...}
    GET  /submissions                  the most recent submissions with their job counts and ETA
    GET  /submissions/{id}             job counts, each job's state, the spec (a browser gets the live report page)
    POST /submissions/{id}/cancel      cancel its queued jobs
    POST /submissions/{id}/retry       run its failed, diverged, cancelled and stuck queued jobs again
    GET  /submissions/{id}/results     its table: the same JSON as `l335q results --format json`
    GET  /submissions/{id}/artifacts   the stored artifacts' metadata (ids for /artifacts/{id}); ?job= one job's
    GET  /results/{task}?submission=ID the task's table (default: its latest submission)
    GET  /plot/{task}?submission=ID    the task's figure as PNG, the same as `l335q plot` (?job= for cls-features)
    GET  /report?submission=ID...      the self-contained HTML report, the same as `l335q report`
    GET  /artifacts/{id}               the artifact's bytes with its media type
    GET  /health                       liveness + database reachability (no token needed)
    GET  /, /login                     the web view (``api/web.py``)

Auth: when ``L335Q_API_TOKEN`` is set every endpoint but /health and /login needs ``Authorization: Bearer
<token>`` or the web view's login cookie (``api/auth.py``). Submit, cancel and retry go through
``l335q.service``, as the CLI's do: with ``L335Q_BROKER_URL`` set the jobs are published for the workers;
without it (embedded mode) they run in this process, one at a time, on one background thread.
Errors answer one JSON line ``{"error": "..."}``: 422 for a bad spec or parameter, 404 for an unknown id or
path, 401 without the token, 503 for an unreachable database or broker; a browser gets the same as a page
(``api/errors.py``).
"""
from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

import yaml
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import Field
from sqlalchemy import func, select

from l335q import UserError, __version__, service
from l335q.config import broker_url
from l335q.db import Artifact, Job, Submission, ensure_schema, session_scope
from l335q.specs import SpecError, expand
from l335q.tasks import KINDS

from . import errors, models
from .auth import configured_token, require_token, wants_html
from .errors import ServiceUnavailable, read_capped

log = logging.getLogger("l335q.api")
MAX_SPEC_BYTES = 1024 * 1024
MAX_ID = 2**31 - 1           # ids are 32-bit integers in the database


@asynccontextmanager
async def lifespan(app: FastAPI):
    if not configured_token():
        log.warning("L335Q_API_TOKEN is not set: the API answers every request without a token")
    yield


ERRORS = {status: {"model": models.ErrorBody} for status in (401, 404, 422, 503)}
app = FastAPI(title="l335q", version=__version__, lifespan=lifespan, responses=ERRORS,
              description="Submit experiment specs, follow their jobs, read results, figures, reports and stored "
                          "images; cancel and retry. Every error is one JSON line {\"error\": ...}.")
_embedded_runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l335q-embedded")
errors.install(app)


# ----------------------------------------------------------------------------- dependencies

def database_ready() -> None:
    try:
        ensure_schema()
    except UserError as exc:
        raise ServiceUnavailable(str(exc)) from None


guarded = [Depends(require_token), Depends(database_ready)]
QueueName = Query(None, pattern=r"^[\w.:-]{1,100}$",
                  description="Celery queue (service mode); default: for a retry the queue its jobs were "
                              "published on, else L335Q_API_QUEUE, else l335q")
SubmissionId = Path(ge=1, le=MAX_ID, description="a submission's id")
OptionalId = Query(None, ge=1, le=MAX_ID)
TaskName = Path(description="a task kind (or a view such as cls-features)", json_schema_extra={"enum": list(KINDS)})


def default_queue() -> str:
    """The queue submit and retry publish on when a request names none (``l335q api --queue`` sets it)."""
    return os.environ.get("L335Q_API_QUEUE") or service.QUEUE


def submission_or_404(session, submission_id: int) -> Submission:
    sub = session.get(Submission, submission_id)
    if sub is None:
        raise HTTPException(404, f"no submission with id {submission_id}")
    return sub


# ----------------------------------------------------------------------------- submit

@app.get("/health", response_model=models.Health, response_model_exclude_none=True,
         responses={503: {"model": models.Health}})
def health():
    try:
        ensure_schema()
    except UserError as exc:
        return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
    return {"status": "ok", "version": __version__, "mode": "service" if broker_url() else "embedded"}


def _parse_spec(body: bytes, content_type: str) -> dict:
    try:
        text = body.decode()
        raw = json.loads(text) if "json" in content_type else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError):
        raise SpecError("request body is not a valid YAML or JSON spec") from None
    if not isinstance(raw, dict):
        raise SpecError("spec: expected a mapping of keys to values at the top level")
    return raw


def refuse_server_paths(raw: dict) -> None:
    """A file key's value must be ``sample:`` or ``upload:``: the API never reads (or probes) the server's disk."""
    from l335q.tasks import submittable

    if "task" not in raw:
        return                     # expand() names the missing key
    for name, key in submittable(raw["task"]).SCHEMA.keys.items():
        values = raw.get(name) if isinstance(raw.get(name), list) else [raw.get(name)]
        for v in values:
            if key.file and isinstance(v, str) and not v.startswith(("sample:", "upload:")):
                raise SpecError(f"spec key {name!r}: {v!r} names a file; the HTTP API takes only sample: or "
                                "upload: values (submit files with the CLI)")


def _run_embedded(job_ids: list[int], url: str) -> None:
    for job_id in job_ids:
        try:
            service.run_embedded([job_id], worker="api-embedded", url=url)
        except Exception:  # a broken job must not stop the others
            log.exception("job %d could not be run", job_id)


def run_here(job_ids: list[int]) -> None:
    """Embedded mode: the jobs run after the response, one at a time, on the API's background thread."""
    from l335q.config import database_url

    _embedded_runner.submit(_run_embedded, job_ids, database_url())   # the database of this request


def _spec_schema() -> dict:
    from l335q.tasks import KINDS

    return {"type": "object", "required": ["task"], "additionalProperties": True,
            "properties": {"task": {"type": "string", "enum": list(KINDS)}, "title": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
            "description": "an experiment spec (see the README); list values are grid axes"}


@app.post("/submissions", status_code=201, dependencies=guarded, response_model=models.Submitted,
          responses={200: {"model": models.Planned, "description": "dry_run=true: the plan, nothing written"},
                     413: {"model": models.ErrorBody}},
          openapi_extra={"requestBody": {"required": True, "content": {
              "application/json": {"schema": _spec_schema()},
              "application/yaml": {"schema": {"type": "string", "description": "the spec as YAML"}}}}})
async def submit(request: Request, queue: str | None = QueueName,
                 dry_run: bool = Query(False, description="write nothing; answer 200 with the plan: jobs, seeds, "
                                       "reused, to_run, estimated_seconds (l335q.plan)")):
    raw = _parse_spec(await read_capped(request, MAX_SPEC_BYTES, "spec"), request.headers.get("content-type", ""))
    if dry_run:
        return JSONResponse(await run_in_threadpool(_plan, raw))
    return await run_in_threadpool(_store_and_start, raw, queue or default_queue())


def _plan(raw: dict) -> dict:
    from l335q.plan import plan

    try:
        refuse_server_paths(raw)
        expand(raw)
    except UserError as exc:
        raise SpecError(str(exc)) from None
    try:
        ensure_schema()
        return plan(raw).as_json()
    except SpecError:
        raise
    except UserError as exc:
        raise ServiceUnavailable(str(exc)) from None


def _store_and_start(raw: dict, queue: str) -> dict:
    try:
        refuse_server_paths(raw)
        exp = expand(raw)
    except UserError as exc:       # every problem found here is the spec's (e.g. an unknown task kind)
        raise SpecError(str(exc)) from None
    try:
        sub = service.submit(raw, queue=queue, run_here=run_here)
    except SpecError:
        raise
    except UserError as exc:       # the spec was fine: the database or the broker is not
        raise ServiceUnavailable(str(exc)) from None
    if sub.mode == "service":
        return {"id": sub.id, "task": exp.task, "jobs": len(sub.job_ids), "mode": "service", "queue": queue}
    return {"id": sub.id, "task": exp.task, "jobs": len(sub.job_ids), "mode": "embedded",
            "note": "no broker configured: the jobs run one at a time inside the API process"}


# ----------------------------------------------------------------------------- follow

def _describe(sub: Submission, progress) -> dict:
    return {"id": sub.id, "task": sub.task, "title": sub.title, "created_at": sub.created_at.isoformat(),
            "jobs": progress.total, "counts": progress.counts, "finished": progress.finished,
            "eta_s": progress.as_json()["eta_s"], "running": progress.running}


@app.get("/submissions", dependencies=guarded, response_model=list[models.SubmissionSummary])
def submissions(limit: int = Query(20, ge=1, le=500)):
    from l335q.report import progress

    with session_scope() as s:
        subs = list(s.scalars(select(Submission).order_by(Submission.id.desc()).limit(limit)))
        prog = progress(s, [sub.id for sub in subs])
        return [_describe(sub, prog[sub.id]) for sub in subs]


@app.get("/submissions/{submission_id}", dependencies=guarded, response_model=models.SubmissionStatus,
         responses={200: {"content": {"text/html": {}},
                          "description": "JSON; a client that accepts text/html gets the live report page"}})
def submission_status(request: Request, submission_id: int = SubmissionId,
                      refresh: int = Query(5, ge=1, le=3600, description="seconds between reloads of the page")):
    from l335q.report import progress, report_html
    from l335q.results import input_names, named

    with session_scope() as s:
        sub = submission_or_404(s, submission_id)
        if wants_html(request):
            return HTMLResponse(report_html(s, [sub.id], static=False, refresh=refresh,
                                            logout=configured_token() is not None))
        names = input_names(s, sub.id)
        jobs = [{"id": j.id, "state": j.state, "attempts": j.attempts, "seconds": j.seconds, "worker": j.worker,
                 "params": named(j.params, names),
                 "error": (j.error or "").strip().splitlines()[-1] if (j.error or "").strip() else None}
                for j in s.scalars(select(Job).where(Job.submission_id == sub.id).order_by(Job.id))]
        return {**_describe(sub, progress(s, [sub.id])[sub.id]), "spec": named(sub.spec, names), "job_states": jobs}


def _after_action(request: Request, submission_id: int, body: dict):
    """A browser's form goes back to the submission's page; any other client gets the JSON."""
    if wants_html(request):
        return RedirectResponse(f"/submissions/{submission_id}", status_code=303)
    return body


@app.post("/submissions/{submission_id}/cancel", dependencies=guarded, response_model=models.Cancelled,
          responses={303: {"description": "a browser's form: back to the submission's page"}})
def cancel(request: Request, submission_id: int = SubmissionId):
    with session_scope() as s:
        submission_or_404(s, submission_id)
    n = service.cancel(submission_id)
    return _after_action(request, submission_id,
                         {"id": submission_id, "cancelled": n, "counts": dict(service.job_counts(submission_id))})


@app.post("/submissions/{submission_id}/retry", dependencies=guarded, response_model=models.Retried,
          responses={303: {"description": "a browser's form: back to the submission's page"}})
def retry(request: Request, submission_id: int = SubmissionId,
          running: bool = Query(False, description="also jobs an interrupted process left running"),
          queue: str | None = QueueName):
    with session_scope() as s:
        submission_or_404(s, submission_id)
        queue = queue or s.scalar(select(Job.queue).where(Job.submission_id == submission_id, Job.queue.is_not(None))
                                  .group_by(Job.queue).order_by(func.count().desc()).limit(1)) or default_queue()
    try:
        ids = service.retry(submission_id, queue=queue, include_running=running, run_here=run_here)
    except UserError as exc:
        raise ServiceUnavailable(str(exc)) from None
    return _after_action(request, submission_id,
                         {"id": submission_id, "jobs": ids, "mode": "service" if broker_url() else "embedded"})


@app.get("/submissions/{submission_id}/artifacts", dependencies=guarded, response_model=list[models.ArtifactInfo])
def submission_artifacts(submission_id: int = SubmissionId, job: int | None = OptionalId,
                         media_type: str | None = Query(None, max_length=100, description="e.g. image/png")):
    with session_scope() as s:
        submission_or_404(s, submission_id)
        cols = (Artifact.id, Artifact.job_id, Artifact.name, Artifact.media_type, Artifact.size, Artifact.sha256,
                Artifact.seed)
        q = select(*cols).where(Artifact.submission_id == submission_id).order_by(Artifact.id)
        if job is not None:
            if s.scalar(select(Job.id).where(Job.id == job, Job.submission_id == submission_id)) is None:
                raise HTTPException(404, f"submission {submission_id} has no job {job}")
            q = q.where(Artifact.job_id == job)
        if media_type is not None:
            q = q.where(Artifact.media_type == media_type)
        return [dict(zip(("id", "job_id", "name", "media_type", "size", "sha256", "seed"), r)) for r in s.execute(q)]


# ----------------------------------------------------------------------------- results, figures, reports

def _table_json(task: str | None, submission: int | None) -> Response:
    from l335q.results import load, render, table_of
    from l335q.tasks import get_kind

    with session_scope() as s:
        if submission is not None:
            task = task or submission_or_404(s, submission).task
            submission_or_404(s, submission)
        kind = get_kind(task, "task")
        if submission is None and s.scalar(select(Submission.id).where(Submission.task == task).limit(1)) is None:
            raise HTTPException(404, f"no submission of task {task!r} in the database yet")
        table = table_of(kind, load(s, submission, task))
        return Response(render(table, "json"), media_type="application/json")


@app.get("/submissions/{submission_id}/results", dependencies=guarded, response_model=models.ResultsTable)
def submission_results(submission_id: int = SubmissionId):
    return _table_json(None, submission_id)


@app.get("/results/{task}", dependencies=guarded, response_model=models.ResultsTable,
         responses={400: {"model": models.ErrorBody}})
def results(task: str = TaskName, submission: int | None = OptionalId):
    return _table_json(task, submission)


@app.get("/plot/{task}", dependencies=guarded, response_class=Response,
         responses={200: {"content": {"image/png": {}}, "description": "the figure"},
                    400: {"model": models.ErrorBody}})
def plot(task: str = TaskName, submission: int | None = OptionalId, job: int | None = OptionalId,
         samples: str | None = Query(None, max_length=200, pattern=r"^\d+(,\d+)*$",
                                     description="comma-separated test-image indices (cls-features)")):
    from l335q.report import plot_png

    with session_scope() as s:
        if submission is not None:
            submission_or_404(s, submission)
        if job is not None and s.get(Job, job) is None:
            raise HTTPException(404, f"no job with id {job}")
        return Response(plot_png(s, task, submission, job, samples), media_type="image/png")


@app.get("/report", dependencies=guarded, response_class=HTMLResponse,
         responses={200: {"content": {"text/html": {}}, "description": "one self-contained HTML file"}})
def report(submission: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Query(..., min_length=1, max_length=20,
                                                                           description="submission ids")):
    from l335q.report import report_html

    with session_scope() as s:
        for i in submission:
            submission_or_404(s, i)
        html = report_html(s, submission, static=True)
    name = "report-" + "-".join(map(str, dict.fromkeys(submission))) + ".html"
    return HTMLResponse(html, headers={"Content-Disposition": f'inline; filename="{name}"'})


@app.get("/artifacts/{artifact_id}", dependencies=guarded, response_class=Response,
         responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}})
def artifact(artifact_id: int = Path(ge=1, le=MAX_ID)):
    with session_scope() as s:
        art = s.get(Artifact, artifact_id)
        if art is None:
            raise HTTPException(404, f"no artifact with id {artifact_id}")
        return Response(art.data, media_type=art.media_type,
                        headers={"ETag": f'"{art.sha256}"', "X-Content-SHA256": art.sha256,
                                 "Cache-Control": "private, max-age=86400",
                                 "Content-Disposition": f'inline; filename="{art.id}-{_safe(art.name)}"'})


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100]


from .web import router as _web  # noqa: E402  (the pages use the handlers above)

app.include_router(_web)
