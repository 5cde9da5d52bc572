"""The live web view of `l335q api`, in a real headless Chromium, against a real worker in service mode.

One batch runs while the browser watches: the index's progress advances, cancel and retry buttons change job
states, a failed job's error shows, the report page's table is the JSON results and its images load; without
the token every page refuses. Screenshots of the index and a report page land in the test's tmp folder.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import httpx
import pytest

from browser import chromium, images_loaded, same_rows, table_rows, watch_console

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
TOKEN = "web-test-token-7Qx"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INR = {"task": "inr-init", "fresh": True, "resolution": 16, "width": 64, "device": "cpu", "seed_group": 1}
# ~1 s a job on an idle machine: several progress beats each
RUNNING = {**INR, "title": "watched while it runs", "steps": 2400, "initialiser": ["default"], "seeds": "0-5"}
QUEUED = {**INR, "title": "cancelled, then retried", "steps": 20, "seeds": [0],
          "initialiser": ["default", "xavier-normal"]}
FAILING = {**INR, "title": "fails: its image was never stored", "steps": 20, "seeds": [0],
           "initialiser": ["default"], "image": "upload:" + "0" * 64}


@pytest.fixture
def short_lease(monkeypatch):
    """Running jobs write their progress every lease / 3 = 0.3 s (the workers started after this inherit it), one
    job at a time (no packs: the watched batch's jobs finish one by one, for the page to show them advance)."""
    monkeypatch.setenv("L335Q_LEASE_S", "0.9")
    monkeypatch.setenv("L335Q_PACK_MAX", "1")


@pytest.fixture
def api_server(service_env, tmp_path):
    """A real `l335q api` process on a free port, with the token set and the test's queue as its default."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "api.log", "w")
    env = {**os.environ, **service_env, "L335Q_API_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "l335q.cli.main", "api", "--port", str(port),
                             "--queue", service_env["L335Q_TEST_QUEUE"]], env=env, stdout=log, stderr=log,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
        time.sleep(0.3)
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def submit(http, spec) -> int:
    r = http.post("/submissions", content=json.dumps(spec), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def wait_for(http, sub_id, done, timeout=180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http.get(f"/submissions/{sub_id}").json()
        if done(status):
            return status
        time.sleep(0.3)
    raise AssertionError(f"submission {sub_id}: {status['counts']}")


def watch_progress(page, sub_id: int, shot, timeout: float = 120) -> tuple[list[tuple[int, int, bool]], set[str]]:
    """(final jobs, total, a running segment shown) of the submission's index row, read after each reload until
    every job is final, and the running jobs' own progress lines seen; a screenshot to ``shot`` the first time
    a job's own progress shows after one job has finished."""
    seen, lines = [], set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            counts = page.locator(f'tr[data-submission="{sub_id}"] .counts')
            final, total = int(counts.get_attribute("data-final")), int(counts.get_attribute("data-total"))
            running = page.locator(f'tr[data-submission="{sub_id}"] .bar .s-running').count() > 0
            now = page.locator(f'tr[data-submission="{sub_id}"] .job-progress').all_inner_texts()
        except Exception:            # the page reloaded between two reads
            continue
        lines.update(now)
        if not seen or seen[-1] != (final, total, running):
            seen.append((final, total, running))
        if running and final and now and not shot.exists():
            page.screenshot(path=str(shot), full_page=True)
        if final == total:
            return seen, lines
        page.wait_for_timeout(250)
    raise AssertionError(f"submission {sub_id} did not finish: {seen}")


def test_live_view_in_a_real_browser(short_lease, api_server, worker, tmp_path):
    http = httpx.Client(base_url=api_server, headers=AUTH, timeout=30)
    watched, queued, failing = submit(http, RUNNING), submit(http, QUEUED), submit(http, FAILING)
    with chromium() as browser:
        # without the token every page refuses (and shows the login form), and a form cannot act
        stranger = browser.new_page()
        for path in ("/", f"/submissions/{watched}", f"/report?submission={watched}", "/artifacts/1"):
            assert stranger.goto(api_server + path).status == 401, path
            assert stranger.locator("#token").count() == 1 and TOKEN not in stranger.content()
        assert stranger.request.post(f"{api_server}/submissions/{queued}/cancel").status == 401
        assert stranger.goto(api_server + "/login").status == 200
        stranger.fill("#token", "wrong")
        stranger.click("#login")
        assert "wrong token" in stranger.inner_text("#message")

        # log in through the form: the token becomes an HttpOnly cookie, never part of a URL
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        errors = watch_console(page)
        urls = []
        page.on("request", lambda r: urls.append(r.url))
        assert page.goto(f"{api_server}/submissions/{queued}").status == 401
        assert errors == ["console: Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
        errors.clear()
        page.fill("#token", TOKEN)
        page.click("#login")
        assert page.url == f"{api_server}/submissions/{queued}"
        cookie = next(c for c in context.cookies() if c["name"] == "l335q_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # cancel the jobs that wait behind the watched batch, from the page's button
        page.click("#cancel")
        page.wait_for_load_state()
        assert http.get(f"/submissions/{queued}").json()["counts"] == {"cancelled": 2}
        assert page.locator("table.jobs tbody tr[data-state=cancelled]").count() == 2

        # the index shows the watched batch advance while it runs
        page.goto(f"{api_server}/?refresh=1")
        seen, lines = watch_progress(page, watched, tmp_path / "index-running.png")
        unfinished = [f for f, t, _ in seen if f < t]
        assert len({f for f, _, _ in seen}) >= 3 and unfinished, seen    # at least two steps seen under way
        assert any(running for *_, running in seen), seen
        assert seen[-1][:2] == (6, 6)
        steps = [re.fullmatch(r"job (\d+): step (\d+) of 2400", line) for line in lines]
        assert lines and all(steps) and len({m[2] for m in steps}) >= 2, lines      # each job's own progress
        page.screenshot(path=str(tmp_path / "index.png"), full_page=True)

        # retry the cancelled jobs: they run and the page shows their results
        page.goto(f"{api_server}/submissions/{queued}")
        page.click("#retry")
        page.wait_for_load_state()
        status = wait_for(http, queued, lambda s: s["finished"])
        assert status["counts"] == {"done": 2} and [j["attempts"] for j in status["job_states"]] == [1, 1]
        page.goto(f"{api_server}/submissions/{queued}")
        columns, rows = table_rows(page, f"#submission-{queued} table.results")
        assert same_rows(rows, http.get(f"/submissions/{queued}/results").json()["rows"]) and len(rows) == 2
        imgs = images_loaded(page)
        assert len(imgs) >= 5 and all(i["w"] > 0 for i in imgs), imgs    # the figure and 2 x 2 reconstructions
        assert page.locator("#cancel, #retry").count() == 0
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)

        # compare with the submission of the same kind before it: only the keys that differ
        page.click("#compare-previous")
        assert page.url == f"{api_server}/report?submission={watched}&submission={queued}"
        _, differ = table_rows(page, "#compare table.spec-diff")
        assert [d["key"] for d in differ] == ["seeds", "initialiser", "steps"], differ      # titles are not compared
        assert all(i["w"] > 0 for i in images_loaded(page))

        # a failed job's error is on its page
        wait_for(http, failing, lambda s: s["finished"])
        page.goto(f"{api_server}/submissions/{failing}")
        assert "is not stored with submission" in page.inner_text(f"#submission-{failing} p.error")
        assert page.locator("#retry").count() == 1
        assert errors == [] and not any(TOKEN in u for u in urls)
    for shot in ("index-running.png", "index.png", "report.png"):
        assert (tmp_path / shot).stat().st_size > 10_000


def test_login_cookie_cannot_be_used_by_another_sites_form(migrated_pg, monkeypatch):
    """The cookie the login form sets authenticates this site's own forms only; a token in a URL counts for nothing."""
    from fastapi.testclient import TestClient

    from l335q.api.app import app
    from l335q.submit import create_submission

    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    monkeypatch.setenv("L335Q_API_TOKEN", TOKEN)
    sub_id, _ = create_submission({**QUEUED, "title": "never dispatched"})       # two queued jobs, no message
    with TestClient(app, base_url="http://l335q.test") as client:
        assert client.get(f"/?token={TOKEN}").status_code == 401
        r = client.post("/login", content=f"token={TOKEN}&next=/", follow_redirects=False,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 303 and r.headers["location"] == "/" and TOKEN not in r.headers["location"]
        assert "httponly" in r.headers["set-cookie"].lower() and "samesite=strict" in r.headers["set-cookie"].lower()
        assert client.get(f"/submissions/{sub_id}").json()["counts"] == {"queued": 2}
        r = client.post(f"/submissions/{sub_id}/cancel", headers={"Origin": "http://evil.example"})
        assert r.status_code == 403 and set(r.json()) == {"error"}
        assert client.get(f"/submissions/{sub_id}").json()["counts"] == {"queued": 2}
        r = client.post(f"/submissions/{sub_id}/cancel", headers={"Origin": "http://l335q.test"})
        assert r.status_code == 200 and r.json()["cancelled"] == 2
        client.post("/logout")
        assert client.get(f"/submissions/{sub_id}").status_code == 401
