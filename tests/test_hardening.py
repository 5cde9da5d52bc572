"""Hardening of the API and the inputs: cookie-authenticated POSTs refuse cross-site requests, the token is
compared in constant time, request bodies are capped while they stream in, a decompression-bomb PNG is refused
from its header (one line, exit 2, nothing written)."""
from __future__ import annotations

import struct
import zlib

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from l335q.api import auth
from l335q.api.app import MAX_SPEC_BYTES, app
from l335q.db import Job, Submission, session_scope
from l335q.submit import create_submission

from conftest import l335q_cmd

TOKEN = "hardening-token-4Kd"
SITE = "http://l335q.test"
SPEC = {"task": "inr-init", "image": "sample:camera", "resolution": 10, "width": 32, "depth": 3, "steps": 20,
        "seeds": [0], "device": "cpu"}


@pytest.fixture
def logged_in(migrated_pg, monkeypatch):
    """A browser's session: the login form's cookie, no bearer header."""
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    monkeypatch.setenv("L335Q_API_TOKEN", TOKEN)
    with TestClient(app, base_url=SITE) as client:
        r = client.post("/login", content=f"token={TOKEN}&next=/", follow_redirects=False,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 303 and "samesite=strict" in r.headers["set-cookie"].lower()
        yield client


CROSS_SITE = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
              {"Sec-Fetch-Site": "same-site", "Origin": "http://l335q.test"},    # a sibling subdomain's page
              {"Referer": "http://evil.example/page"}]


@pytest.mark.parametrize("headers", CROSS_SITE, ids=lambda h: ",".join(f"{k}={v}" for k, v in h.items()))
def test_cookie_posts_from_another_site_are_refused(logged_in, headers):
    sub_id, _ = create_submission({**SPEC, "initialiser": ["default", "xavier-normal"]})   # two queued jobs
    with session_scope() as s:
        before = s.scalar(select(func.count()).select_from(Submission))
    for path, body in ((f"/submissions/{sub_id}/cancel", None), (f"/submissions/{sub_id}/retry", None),
                       ("/submissions", "task: inr-init\nimage: sample:camera\nsteps: 1\n")):
        r = logged_in.post(path, content=body, headers={**headers, "Content-Type": "application/yaml"})
        assert r.status_code == 403 and set(r.json()) == {"error"}, (path, r.text)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == before
        assert set(s.scalars(select(Job.state).where(Job.submission_id == sub_id))) == {"queued"}


def test_cookie_posts_from_this_sites_pages_and_bearer_clients_are_served(logged_in):
    sub_id, _ = create_submission({**SPEC, "initialiser": ["default", "xavier-normal"]})
    r = logged_in.post(f"/submissions/{sub_id}/cancel", headers={"Origin": SITE, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.json()["cancelled"] == 2
    r = logged_in.post(f"/submissions/{sub_id}/retry", headers={"Referer": f"{SITE}/submissions/{sub_id}"})
    assert r.status_code == 200, r.text
    logged_in.cookies.clear()                            # a script: bearer header, whatever its Origin
    r = logged_in.post(f"/submissions/{sub_id}/cancel", headers={"Authorization": f"Bearer {TOKEN}",
                                                                  "Origin": "http://evil.example"})
    assert r.status_code == 200


def test_the_token_is_compared_in_constant_time(monkeypatch):
    seen = []
    real = auth.hmac.compare_digest
    monkeypatch.setattr(auth.hmac, "compare_digest", lambda a, b: seen.append((a, b)) or real(a, b))
    monkeypatch.setenv("L335Q_API_TOKEN", TOKEN)
    assert auth.token_ok(TOKEN) and not auth.token_ok(TOKEN[:-1]) and not auth.token_ok("x" * len(TOKEN))
    assert len(seen) == 3 and all(b == TOKEN.encode() for _, b in seen)


def test_a_body_over_the_cap_is_refused_while_it_streams(migrated_pg, monkeypatch):
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    with session_scope() as s:
        before = s.scalar(select(func.count()).select_from(Submission))
    big = b"task: inr-init\n" + b"#" * MAX_SPEC_BYTES
    sent = []

    def chunks():                                     # no Content-Length: the cap counts what arrives
        for i in range(0, len(big), 65536):
            sent.append(i)
            yield big[i:i + 65536]

    with TestClient(app) as client:
        r = client.post("/submissions", content=big, headers={"Content-Type": "application/yaml"})
        assert r.status_code == 413 and r.json() == {"error": f"spec larger than {MAX_SPEC_BYTES:,} bytes"}
        r = client.post("/submissions", content=chunks(), headers={"Content-Type": "application/yaml"})
        assert r.status_code == 413 and "larger than" in r.json()["error"]
        r = client.post("/login", content=b"token=" + b"x" * 10_000)
        assert r.status_code == 413
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == before


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header announcing width x height RGB pixels with a few bytes of data: 30 GB if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + \
        chunk(b"IEND", b"")


def test_a_decompression_bomb_png_is_one_line_exit_2_and_nothing_written(tmp_path):
    """Past PIL's limit (100,000 x 100,000: PIL refuses it at open) and past l335q's only (5,000 x 5,000: refused
    from the header before the pixels are decoded, 75 MB that would have been)."""
    for name, side in (("bomb.png", 100_000), ("big.png", 5_000)):
        (tmp_path / name).write_bytes(bomb_png(side, side))
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(f"task: inr-init\nimage: {name}\nsteps: 1\n")
        for args in (("submit", spec), ("fit", tmp_path / name, "--steps", "1")):
            p = l335q_cmd(*args, timeout=60)
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 2 and len(lines) == 1 and "image is too large" in lines[0], p.stderr
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 0
