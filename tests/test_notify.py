"""The morning message (``l335q.notify``): one webhook POST when a submission ends, to a real local HTTP server;
sent once with two real workers racing, retried while the endpoint is down, shown by `l335q status`; and the
night's digest (`l335q report --since`), failures grouped by error signature."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from l335q.api.app import app
from l335q import notify, service
from l335q.db import Job, Submission, session_scope, upgrade
from l335q.runner import execute_job
from l335q.submit import create_submission

from conftest import fresh_pg_database, l335q_cmd, service_mode
from test_unattended import FIELD, detached, job, start_worker, stop, wait

WEB = "http://gpu-box:8000"


class Hook:
    """A webhook receiver on 127.0.0.1: answers 500 to the first ``fail`` requests, then 200; records each."""

    def __init__(self, fail: int = 0):
        self.fail, self.tries, self.posts, self.lock = fail, [], [], threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.lock:
                    hook.tries.append(self.headers["Idempotency-Key"])
                    ok = hook.fail <= 0
                    hook.fail -= 1
                    if ok:
                        hook.posts.append((self.headers["Idempotency-Key"], body))
                self.send_response(200 if ok else 500)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service_env(monkeypatch):
    """Service mode on a database of this test's own: the reaper sweeps every submission it finds, so one left
    by an earlier test would be notified here too."""
    with fresh_pg_database("l335q_notify") as url:
        upgrade(url)
        yield service_mode(url, monkeypatch)


@pytest.fixture
def hook(monkeypatch):
    h = Hook()
    monkeypatch.setenv("L335Q_NOTIFY_URL", h.url)
    monkeypatch.setenv("L335Q_WEB_URL", WEB)
    yield h
    h.close()


def submission(sub_id: int) -> Submission:
    return detached(Submission, sub_id)


def test_two_workers_racing_send_the_notification_once(service_env, hook, tmp_path):
    """Two jobs, two real workers ending them at about the same moment, each settling the submission, and their
    reapers sweeping every 0.5 s: one POST, with the counts, the link and the idempotency key; status shows it."""
    sub_id, job_ids = create_submission({**FIELD, "seeds": [0, 1], "steps": 300, "title": "night"},
                                        queue=service_env["L335Q_TEST_QUEUE"])
    assert len(job_ids) == 2
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = [start_worker(service_env, open(p, "w"), f"w{i}@%h", L335Q_NOTIFY_URL=hook.url, L335Q_WEB_URL=WEB,
                          L335Q_PACK_MAX="1")                  # unpacked: one job each, not both in one fit
             for i, p in enumerate(logs)]
    try:
        time.sleep(8)                                   # both workers up before the jobs are published
        service.dispatch(job_ids, service_env["L335Q_TEST_QUEUE"])
        wait(lambda: all(job(j).state == "done" for j in job_ids), 180, "both jobs to end", logs)
        assert len({job(j).worker for j in job_ids}) == 2, "one worker ran both jobs: no race"
        wait(lambda: hook.posts, 30, "the notification", logs)
        time.sleep(3)                                   # six reaper rounds on each worker
    finally:
        stop(procs)
    assert len(hook.tries) == 1, hook.tries
    key, body = hook.posts[0]
    assert key.startswith(f"l335q-submission-{sub_id}-")
    assert (body["submission"], body["title"], body["state"], body["counts"]) == (sub_id, "night", "done",
                                                                                  {"done": 2})
    assert body["url"] == f"{WEB}/submissions/{sub_id}" and body["url"] in body["text"]
    assert body["errors"] == [] and body["duration_s"] > 0
    assert submission(sub_id).notify_state == "sent" and submission(sub_id).notify_attempts == 1
    shown = l335q_cmd("status", sub_id, check=True).stdout
    assert "notification sent" in shown, shown
    assert f"[notification sent]  night" in l335q_cmd("status", check=True).stdout


def test_settle_from_many_threads_at_once_claims_the_submission_once(service_env, hook):
    _, (job_id,) = create_submission({**FIELD, "steps": 20})
    assert execute_job(job_id) == "done"
    sub_id = job(job_id).submission_id
    start, sent = threading.Barrier(8), []

    def settle():
        start.wait()
        sent.append(notify.settle([sub_id]))

    threads = [threading.Thread(target=settle) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(sent) == [[]] * 7 + [[sub_id]] and len(hook.tries) == 1


def test_an_endpoint_down_then_failing_then_up_is_retried_by_the_reaper(service_env, hook, monkeypatch):
    """Refused (nothing listens), then HTTP 500, then 200: the reaper's rounds try again after 0.3 s, 0.6 s; the
    receiver gets the same idempotency key each time; status tells each state."""
    monkeypatch.setenv("L335Q_NOTIFY_RETRY_S", "0.3")
    monkeypatch.setenv("L335Q_NOTIFY_URL", "http://127.0.0.1:9/down")
    sub_id, (job_id,) = create_submission({**FIELD, "steps": 20})
    service.run_embedded([job_id])
    first = submission(sub_id)
    assert (first.notify_state, first.notify_attempts) == ("retrying", 1) and "refused" in first.notify_error
    assert "notification retrying after 1 try: " in l335q_cmd("status", sub_id, check=True).stdout
    monkeypatch.setenv("L335Q_NOTIFY_URL", hook.url)
    hook.fail = 1
    assert service.reap().notified == []               # not due yet: 0.3 s after the first try
    time.sleep(0.4)
    assert service.reap().notified == [] and len(hook.tries) == 1
    second = submission(sub_id)
    assert (second.notify_state, second.notify_attempts, second.notify_error) == ("retrying", 2,
                                                                                   "HTTP 500 Internal Server Error")
    time.sleep(0.7)
    assert service.reap().notified == [sub_id]
    assert submission(sub_id).notify_state == "sent" and len(set(hook.tries)) == 1 and len(hook.posts) == 1
    assert "(try 3)" in l335q_cmd("status", sub_id, check=True).stdout
    assert service.reap().notified == [] and len(hook.tries) == 2   # sent: never again


def test_the_sweep_leaves_submissions_that_ended_before_it_looked_and_ignores_a_stale_proxy(service_env, hook,
                                                                                          monkeypatch):
    """A submission that ended while no URL was set is not replayed once one is (older than SWEEP_S); one that just
    ended is. The process's global urlopen opener, built while http_proxy pointed nowhere, is not used."""
    monkeypatch.delenv("L335Q_NOTIFY_URL")
    old_id, (old,) = create_submission({**FIELD, "steps": 20})
    new_id, (new,) = create_submission({**FIELD, "steps": 20})
    service.run_embedded([old, new])
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == old).values(finished_at=Job.finished_at - timedelta(
            seconds=notify.SWEEP_S + 60)))
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    urllib.request.install_opener(urllib.request.build_opener())   # as urlopen's first call would keep it
    try:
        monkeypatch.delenv("http_proxy")
        monkeypatch.setenv("L335Q_NOTIFY_URL", hook.url)
        assert service.reap().notified == [new_id]
    finally:
        urllib.request.install_opener(None)
    assert submission(old_id).notify_state is None and [b["submission"] for _, b in hook.posts] == [new_id]


def test_a_notification_is_given_up_after_its_tries_with_the_reason(service_env, monkeypatch):
    monkeypatch.setenv("L335Q_NOTIFY_URL", "http://127.0.0.1:9/down")
    monkeypatch.setenv("L335Q_NOTIFY_ATTEMPTS", "2")
    monkeypatch.setenv("L335Q_NOTIFY_RETRY_S", "0.1")
    sub_id, (job_id,) = create_submission({**FIELD, "steps": 20})
    service.run_embedded([job_id])
    time.sleep(0.2)
    service.reap()
    assert (submission(sub_id).notify_state, submission(sub_id).notify_attempts) == ("failed", 2)
    assert "notification not delivered after 2 tries: " in l335q_cmd("status", sub_id, check=True).stdout
    time.sleep(0.3)
    service.reap()
    assert submission(sub_id).notify_attempts == 2


def test_cancelling_a_submission_ends_it_and_notifies(service_env, hook):
    sub_id, job_ids = create_submission({**FIELD, "seeds": [0, 1]}, queue=service_env["L335Q_TEST_QUEUE"])
    assert hook.posts == []                             # nothing ended yet
    assert service.cancel(sub_id) == 2
    (_, body), = hook.posts
    assert (body["state"], body["counts"]) == ("cancelled", {"cancelled": 2})
    with TestClient(app) as web:                       # the web view tells it too: list and page
        index = web.get("/", headers={"Accept": "text/html"}).text
        page = web.get(f"/submissions/{sub_id}", headers={"Accept": "text/html"}).text
    assert '<span class="meta notification">notification sent</span>' in index
    assert '<span class="notification">notification sent ' in page


def test_retry_clears_the_notification_and_the_next_end_sends_a_new_one(service_env, hook):
    sub_id, (job_id,) = create_submission({**FIELD, "steps": 4000, "time_limit": 0.3})
    service.run_embedded([job_id])
    (_, body), = hook.posts
    assert body["state"] == "failed" and body["errors"][0]["jobs"] == [job_id]
    assert body["errors"][0]["signature"].startswith("time limit # s exceeded at step # of #")
    service.run_embedded(service.retry(sub_id, queue=service_env["L335Q_TEST_QUEUE"]))  # as a worker would
    assert len(hook.posts) == 2 and hook.posts[0][0] != hook.posts[1][0]   # a new key: a new message
    assert hook.posts[1][1]["idempotency_key"] == hook.posts[1][0]


def test_the_digest_covers_the_period_and_groups_failures_by_signature(monkeypatch):
    """Embedded mode: two jobs that end past their time limit at different steps (one signature), one done; the
    digest counts both submissions and groups the two failures; a bad period is one line, exit 2."""
    monkeypatch.setenv("L335Q_CHECKPOINT_S", "3600")
    done_id, (ok,) = create_submission({**FIELD, "steps": 20, "title": "fine"})
    late_id, late = create_submission({**FIELD, "seeds": [0, 1], "steps": 4000, "time_limit": 0.3, "title": "late"})
    service.run_embedded([ok, *late])
    out = l335q_cmd("report", "--since", "1h", "--format", "json", check=True).stdout
    d = json.loads(out)
    assert [r["submission"] for r in d["submissions"]] == [done_id, late_id]
    assert d["counts"] == {"done": 1, "failed": 2}
    (group,) = d["errors"]
    assert group["jobs"] == late and group["submissions"] == [late_id]
    assert group["signature"].startswith("time limit # s exceeded at step # of #"), group
    text = l335q_cmd("report", "--since", "12h", check=True).stdout
    assert "3 jobs: 1 done, 2 failed" in text and "failures by error (2 jobs, 1 distinct):" in text, text
    bad = l335q_cmd("report", "--since", "yesterday")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    with session_scope() as s:
        assert s.scalars(select(Submission.notify_state)).all() == [None, None]   # no URL: nothing tried
