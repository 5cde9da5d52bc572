"""The HTTP API: a thin layer over the core (specs, submit, results, db) for clients without the CLI.

    POST /submissions              a spec (YAML or JSON body) -> {"id", "jobs", "mode", ...}
    GET  /submissions              the most recent submissions with their job counts
    GET  /submissions/{id}         job counts by state and each job's state
    GET  /submissions/{id}/artifacts   the stored artifacts' metadata (ids for /artifacts/{id})
    GET  /results/{task}?submission=ID the same JSON as `l335q results --task TASK --format json`
    GET  /artifacts/{id}           the artifact's bytes with its media type
    GET  /health                   liveness + database reachability (no token needed)

Auth: when ``L335Q_API_TOKEN`` is set every endpoint but /health needs ``Authorization: Bearer <token>``.
Modes: with ``L335Q_BROKER_URL`` set (service mode) a submission's jobs are enqueued for the workers;
without it (embedded mode) they run in this process, one job at a time, on a single background thread,
after the response is sent — poll ``GET /submissions/{id}`` to see them finish.
User errors answer ``{"error": "<one line>"}``: 422 for a bad spec, 404 for an unknown id, 503 for an
unreachable database or broker.
"""
from __future__ import annotations

import hmac
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select

from l335q import UserError, __version__
from l335q.config import broker_url
from l335q.db import Artifact, Job, Submission, ensure_schema, session_scope
from l335q.service import QUEUE
from l335q.specs import SpecError, expand

log = logging.getLogger("l335q.api")
MAX_SPEC_BYTES = 1024 * 1024

@asynccontextmanager
async def lifespan(app: FastAPI):
    if not os.environ.get("L335Q_API_TOKEN"):
        log.warning("L335Q_API_TOKEN is not set: the API answers every request without a token")
    yield


app = FastAPI(title="l335q", version=__version__, lifespan=lifespan,
              description="Submit experiment specs, follow their jobs, read results and stored images.")
_embedded_runner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="l335q-embedded")


class ServiceUnavailable(Exception):
    pass


@app.exception_handler(UserError)
async def _user_error(request: Request, exc: UserError):
    return JSONResponse({"error": str(exc)}, status_code=422 if isinstance(exc, SpecError) else 400)


@app.exception_handler(ServiceUnavailable)
async def _unavailable(request: Request, exc: ServiceUnavailable):
    return JSONResponse({"error": str(exc)}, status_code=503)


@app.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException):
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


# ----------------------------------------------------------------------------- dependencies

def require_token(request: Request) -> None:
    """Bearer-token check, constant-time; the token itself never reaches a log or a response."""
    token = os.environ.get("L335Q_API_TOKEN")
    if not token:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def database_ready() -> None:
    try:
        ensure_schema()
    except UserError as exc:
        raise ServiceUnavailable(str(exc)) from None


guarded = [Depends(require_token), Depends(database_ready)]


def _submission_or_404(session, submission_id: int) -> Submission:
    sub = session.get(Submission, submission_id)
    if sub is None:
        raise HTTPException(404, f"no submission with id {submission_id}")
    return sub


# ----------------------------------------------------------------------------- endpoints

@app.get("/health")
def health():
    try:
        ensure_schema()
    except UserError as exc:
        return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
    return {"status": "ok", "version": __version__, "mode": "service" if broker_url() else "embedded"}


def _parse_spec(body: bytes, content_type: str) -> dict:
    if len(body) > MAX_SPEC_BYTES:
        raise HTTPException(413, f"spec larger than {MAX_SPEC_BYTES} bytes")
    try:
        text = body.decode()
        raw = json.loads(text) if "json" in content_type else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError):
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


def _run_embedded(job_ids: list[int]) -> None:
    from l335q.service import run_embedded

    for job_id in job_ids:
        try:
            run_embedded([job_id], worker="api-embedded")
        except Exception:  # a broken job must not stop the others
            log.exception("job %d could not be run", job_id)


@app.post("/submissions", status_code=201, dependencies=guarded)
async def submit(request: Request, queue: str = Query(QUEUE, pattern=r"^[\w.:-]{1,100}$")):
    raw = _parse_spec(await request.body(), request.headers.get("content-type", ""))
    return await run_in_threadpool(_store_and_start, raw, queue)


def _store_and_start(raw: dict, queue: str) -> dict:
    from l335q import service

    try:
        refuse_server_paths(raw)
        exp = expand(raw)
    except UserError as exc:       # every problem found here is the spec's (e.g. an unknown task kind)
        raise SpecError(str(exc)) from None
    try:
        service.check_services()
    except UserError as exc:
        raise ServiceUnavailable(str(exc)) from None
    sub = service.submit(raw, queue=queue, run_here=lambda ids: _embedded_runner.submit(_run_embedded, ids))
    out = {"id": sub.id, "task": exp.task, "jobs": len(sub.job_ids), "mode": sub.mode}
    if sub.mode == "service":
        return {**out, "queue": queue}
    return {**out, "note": "no broker configured: the jobs run one at a time inside the API process"}


def _counts(session, submission_ids: list[int]) -> dict[int, dict[str, int]]:
    rows = session.execute(select(Job.submission_id, Job.state, func.count()).where(Job.submission_id.in_(submission_ids))
                           .group_by(Job.submission_id, Job.state)).all()
    out: dict[int, dict[str, int]] = {i: {} for i in submission_ids}
    for sub_id, state, n in rows:
        out[sub_id][state] = n
    return out


def _describe(sub: Submission, counts: dict[str, int]) -> dict:
    from l335q.db import FINAL_STATES

    total = sum(counts.values())
    return {"id": sub.id, "task": sub.task, "title": sub.title, "created_at": sub.created_at.isoformat(),
            "jobs": total, "counts": counts,
            "finished": sum(counts.get(s, 0) for s in FINAL_STATES) == total}


@app.get("/submissions", dependencies=guarded)
def submissions(limit: int = Query(20, ge=1, le=500)):
    with session_scope() as s:
        subs = list(s.scalars(select(Submission).order_by(Submission.id.desc()).limit(limit)))
        counts = _counts(s, [sub.id for sub in subs])
        return [_describe(sub, counts[sub.id]) for sub in subs]


@app.get("/submissions/{submission_id}", dependencies=guarded)
def submission_status(submission_id: int):
    with session_scope() as s:
        sub = _submission_or_404(s, submission_id)
        jobs = [{"id": j.id, "state": j.state, "attempts": j.attempts, "seconds": j.seconds,
                 "error": (j.error or "").strip().splitlines()[-1] if j.error else None}
                for j in s.scalars(select(Job).where(Job.submission_id == sub.id).order_by(Job.id))]
        return {**_describe(sub, _counts(s, [sub.id])[sub.id]), "spec": sub.spec, "job_states": jobs}


@app.get("/submissions/{submission_id}/artifacts", dependencies=guarded)
def submission_artifacts(submission_id: int):
    with session_scope() as s:
        _submission_or_404(s, submission_id)
        cols = (Artifact.id, Artifact.job_id, Artifact.name, Artifact.media_type, Artifact.size, Artifact.sha256,
                Artifact.seed)
        rows = s.execute(select(*cols).where(Artifact.submission_id == submission_id).order_by(Artifact.id)).all()
        return [dict(zip(("id", "job_id", "name", "media_type", "size", "sha256", "seed"), r)) for r in rows]


@app.get("/results/{task}", dependencies=guarded)
def results(task: str, submission: int | None = Query(None, ge=1)):
    from l335q.results import load, render
    from l335q.tasks import get_kind

    kind = get_kind(task)
    with session_scope() as s:
        if submission is not None and s.get(Submission, submission) is None:
            raise HTTPException(404, f"no submission with id {submission}")
        if submission is None and s.scalar(select(func.count()).where(Submission.task == task)) == 0:
            raise HTTPException(404, f"no submission of task {task!r} in the database yet")
        table = kind.results(load(s, submission, task))
        return Response(render(table, "json"), media_type="application/json")


@app.get("/artifacts/{artifact_id}", dependencies=guarded)
def artifact(artifact_id: int):
    with session_scope() as s:
        art = s.get(Artifact, artifact_id)
        if art is None:
            raise HTTPException(404, f"no artifact with id {artifact_id}")
        return Response(art.data, media_type=art.media_type,
                        headers={"ETag": f'"{art.sha256}"', "X-Content-SHA256": art.sha256,
                                 "Content-Disposition": f'inline; filename="{art.id}-{_safe(art.name)}"'})


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100]
