"""The web view served by ``l335q api``: server-rendered pages (Jinja2 templates of ``l335q/templates``).

    GET  /                 recent submissions with progress bars and ETAs; reloads itself
    GET  /submissions/{id} (Accept: text/html) the live report page, with cancel and retry buttons (``app.py``)
    GET  /login, POST /login, POST /logout   the token as an HttpOnly cookie (``auth.py``)

Without the token the pages answer 401 with the login form. Nothing here runs JavaScript but the small
sorter of table columns (``templates/sortable.js``).
"""
from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from l335q.db import Submission, session_scope
from l335q.report import progress, render

from .auth import COOKIE, configured_token, require_token, safe_next, token_ok
from .errors import read_capped

router = APIRouter(include_in_schema=False)
MAX_FORM_BYTES = 4096


def error_page(request: Request, status: int, message: str, headers: dict | None = None) -> HTMLResponse:
    """An error as a page; a missing or wrong token shows the login form."""
    if status == 401:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return login_page(safe_next(path), "log in to see this page", status, headers)
    html = render("login.html", static=False, message=f"{status}: {message}", next="/", logout=False,
                  form=False)
    return HTMLResponse(html, status_code=status, headers=headers)


def login_page(next_path: str, message: str | None = None, status: int = 200, headers: dict | None = None):
    return HTMLResponse(render("login.html", static=False, message=message, next=next_path, logout=False, form=True),
                        status_code=status, headers=headers)


@router.get("/", dependencies=[Depends(require_token)])
def index(limit: int = Query(50, ge=1, le=500), refresh: int = Query(5, ge=1, le=3600)):
    with session_scope() as s:
        subs = list(s.scalars(select(Submission).order_by(Submission.id.desc()).limit(limit)))
        prog = progress(s, [sub.id for sub in subs])
        html = render("index.html", static=False, rows=[(sub, prog[sub.id]) for sub in subs], refresh=refresh,
                      logout=configured_token() is not None)
    return HTMLResponse(html)


@router.get("/login")
def login_form(next: str = Query("/", max_length=2000)):
    return login_page(safe_next(next))


@router.post("/login")
async def login(request: Request):
    form = parse_qs((await read_capped(request, MAX_FORM_BYTES, "login form")).decode(errors="replace"))
    token, next_path = form.get("token", [""])[0], safe_next(form.get("next", ["/"])[0])
    if configured_token() is None:
        return RedirectResponse(next_path, status_code=303)
    if not token_ok(token):
        return login_page(next_path, "wrong token", 401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        max_age=30 * 24 * 3600)
    return response


@router.post("/logout")
def logout():
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
