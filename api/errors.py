"""Errors of the API: every one answers one JSON line ``{"error": "..."}`` (a browser gets it as a page).

422 for a bad spec or parameter, 400 for another user error, 404 for an unknown id or path, 401 without the
token, 405 with every method of the path in Allow, 503 for an unreachable database or broker; 500 only for a
bug (the log has the traceback). ``install(app)`` registers the handlers and documents every 4xx/5xx answer
of the OpenAPI schema as ``ErrorBody``.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from l335q import UserError
from l335q.specs import SpecError

from .auth import wants_html

log = logging.getLogger("l335q.api")
_HANDLERS: list = []


async def read_capped(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes: a huge body is never held whole."""
    too_big = HTTPException(413, f"{what} larger than {limit:,} bytes")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def _handler(exc_type):
    def register(fn):
        _HANDLERS.append((exc_type, fn))
        return fn
    return register


class ServiceUnavailable(Exception):
    pass


def error(request: Request, status: int, message: str, headers: dict | None = None) -> Response:
    if wants_html(request):
        from .web import error_page
        return error_page(request, status, message, headers)
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@_handler(UserError)
async def _user_error(request: Request, exc: UserError):
    return error(request, 422 if isinstance(exc, SpecError) else 400, str(exc))


@_handler(ServiceUnavailable)
async def _unavailable(request: Request, exc: ServiceUnavailable):
    return error(request, 503, str(exc))


@_handler(OperationalError)
async def _database_gone(request: Request, exc: OperationalError):
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
    return error(request, 503, f"database unreachable: {reason}")


@_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException):
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:     # every method of the path, not only those of the first route that matched it
        headers["Allow"] = ", ".join(sorted({m for r in request.app.routes if getattr(r, "methods", None)
                                             and r.path_regex.match(request.url.path) for m in r.methods}))
    return error(request, exc.status_code, str(exc.detail), headers or None)


@_handler(RequestValidationError)
async def _bad_parameter(request: Request, exc: RequestValidationError):
    first = exc.errors()[0] if exc.errors() else {}
    where = " ".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
    return error(request, 422, f"{where}: {first.get('msg', 'invalid value')}".replace("\n", " "))


@_handler(Exception)
async def _bug(request: Request, exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server's log has the details"},
                        status_code=500)


def install(app: FastAPI) -> None:
    for exc_type, fn in _HANDLERS:
        app.add_exception_handler(exc_type, fn)

    def openapi() -> dict:
        """FastAPI's schema, with every error answer documented as what it is: one JSON line ``{"error": ...}``
        (FastAPI would give an HTML or PNG operation's errors that operation's media type)."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            ref = {"$ref": "#/components/schemas/ErrorBody"}
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                for status, answer in operation.get("responses", {}).items():
                    if status.startswith(("4", "5")) and "application/json" not in answer.get("content", {}):
                        answer["content"] = {"application/json": {"schema": ref}}
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
