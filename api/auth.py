"""Token auth of the API and its web pages: a bearer header, or a cookie set by the login form.

The token (``L335Q_API_TOKEN``) never travels in a URL: the login form POSTs it, the server answers with an
HttpOnly, SameSite=Strict cookie. A POST authenticated by the cookie must come from this site's own pages:
a browser that says ``Sec-Fetch-Site: cross-site`` (or ``same-site``: another port or subdomain) is refused, and
the Origin header (or, without one, the Referer) must name this host when the browser sends one.
"""
from __future__ import annotations

import hmac
import os
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

COOKIE = "l335q_token"
bearer = HTTPBearer(auto_error=False, description="the server's L335Q_API_TOKEN")
cookie = APIKeyCookie(name=COOKIE, auto_error=False, description="set by the web view's login form")


def configured_token() -> str | None:
    return os.environ.get("L335Q_API_TOKEN") or None


def token_ok(given: str | None) -> bool:
    token = configured_token()
    return token is None or (given is not None and hmac.compare_digest(given.strip().encode(), token.encode()))


def require_token(request: Request, header: HTTPAuthorizationCredentials | None = Depends(bearer),
                  login: str | None = Depends(cookie)) -> None:
    """Bearer header or login cookie, compared in constant time; the token never reaches a log or a response."""
    if configured_token() is None:
        return
    if header is not None and header.scheme.lower() == "bearer" and token_ok(header.credentials):
        return
    if login is not None and token_ok(login):
        if request.method == "POST" and not from_this_site(request):
            raise HTTPException(403, "a form of another site cannot act with this site's login cookie")
        return
    raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def from_this_site(request: Request) -> bool:
    """A browser's request from this site's own pages (the CSRF check of cookie-authenticated POSTs)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin") or request.headers.get("referer")
    return not origin or urlsplit(origin).netloc == request.headers.get("host")


def wants_html(request: Request) -> bool:
    """A browser's page request (``Accept: text/html``) gets HTML; every other client gets JSON."""
    return "text/html" in request.headers.get("accept", "")


def safe_next(path: str | None) -> str:
    """Where to go after logging in: a path on this site only."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path
