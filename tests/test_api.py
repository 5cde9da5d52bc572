"""The HTTP API (FastAPI's TestClient) against the real PostgreSQL: auth, submit, status, results, artifacts."""
from __future__ import annotations

import hashlib
import json
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from l335q.api.app import app
from l335q.db import Artifact, Submission, session_scope

from conftest import l335q_cmd

pytestmark = pytest.mark.usefixtures("one_cpu_thread")
TOKEN = "test-token-Zq81"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TINY_YAML = ("task: cls-compare\ntitle: api test\nseeds: [0]\nepochs: 1\ntrain_subset: 500\ntest_subset: 500\n"
             "batch_size: 100\ndevice: cpu\n")


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("L335Q_API_TOKEN", TOKEN)
    with TestClient(app) as c:
        yield c


def wait_finished(client, sub_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/submissions/{sub_id}", headers=AUTH).json()
        if body["finished"]:
            return body
        time.sleep(0.5)
    raise AssertionError(f"submission {sub_id} not finished after {timeout} s: {body}")


def test_token_is_required_except_for_health(client, migrated_pg, monkeypatch):
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    for method, path in [("get", "/submissions"), ("get", "/submissions/1"), ("get", "/results/cls-compare"),
                         ("get", "/artifacts/1"), ("post", "/submissions")]:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}]:
            r = getattr(client, method)(path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer" and TOKEN not in r.text
    assert client.get("/health").status_code == 200
    assert client.get("/submissions", headers=AUTH).status_code == 200


def test_without_a_token_configured_the_api_is_open(migrated_pg, monkeypatch):
    monkeypatch.delenv("L335Q_API_TOKEN", raising=False)
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    with TestClient(app) as c:
        assert c.get("/submissions").status_code == 200


def test_bad_specs_are_422_with_the_one_line_message(client, migrated_pg, monkeypatch):
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    def stored():                  # what a 422 must not change (a running job's lease age moves on regardless)
        return [(s["id"], s["jobs"], s["counts"]) for s in client.get("/submissions", headers=AUTH).json()]

    before = stored()
    cases = [("task: cls-compare\nepochs: 0\n", "application/yaml", "spec key 'epochs'"),
             (json.dumps({"task": "cls-compare", "lrr": 0.1}), "application/json", "spec key 'lrr'"),
             ("task: cls-compare\nseeds: [\n", "application/yaml", "not a valid YAML or JSON spec"),
             ("[1, 2]", "application/json", "mapping"),
             ("task: no-such-kind\n", "text/plain", "spec key 'task'")]
    for body, ctype, message in cases:
        r = client.post("/submissions", content=body, headers={**AUTH, "Content-Type": ctype})
        assert r.status_code == 422, r.text
        assert message in r.json()["error"] and "\n" not in r.json()["error"]
    assert stored() == before


def test_a_spec_cannot_make_the_server_read_its_own_files(client, migrated_pg, monkeypatch, tmp_path):
    """A path in a file key would be read from the API server's disk and served back: refused."""
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    secret = tmp_path / "server-secret.png"
    secret.write_bytes(b"not for clients")
    before = client.get("/submissions", headers=AUTH).json()
    for path in (secret, tmp_path / "absent.png"):          # the same answer: no probing of the disk either
        r = client.post("/submissions", content=json.dumps({"task": "inr-init", "image": str(path)}),
                        headers={**AUTH, "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"] == (f"spec key 'image': {str(path)!r} names a file; the "
                                                              "HTTP API takes only sample: or upload: values "
                                                              "(submit files with the CLI)"), r.text
    assert client.get("/submissions", headers=AUTH).json() == before


def test_unknown_ids_are_404(client, migrated_pg, monkeypatch):
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    assert client.get("/submissions/987654", headers=AUTH).status_code == 404
    assert client.get("/artifacts/987654", headers=AUTH).status_code == 404
    assert client.get("/results/cls-compare?submission=987654", headers=AUTH).status_code == 404
    assert client.get("/results/no-such-kind", headers=AUTH).status_code == 400


def test_unreachable_database_is_503(client, monkeypatch):
    monkeypatch.setenv("L335Q_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/x")
    r = client.get("/submissions", headers=AUTH)
    assert r.status_code == 503 and r.json()["error"].startswith("database unreachable")
    assert client.get("/health").status_code == 503


def test_submit_status_results_artifact_through_a_worker(client, worker, service_env):
    """Service mode: POST enqueues on the worker's queue; the real worker runs it; the API reads it back."""
    q = service_env["L335Q_TEST_QUEUE"]
    r = client.post(f"/submissions?queue={q}", content=TINY_YAML, headers={**AUTH, "Content-Type": "application/yaml"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert (sub["mode"], sub["jobs"], sub["queue"], sub["task"]) == ("service", 1, q, "cls-compare")
    status = wait_finished(client, sub["id"])
    assert status["counts"] == {"done": 1} and status["title"] == "api test"
    assert status["job_states"][0]["attempts"] == 1

    r = client.get(f"/results/cls-compare?submission={sub['id']}", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    cli = l335q_cmd("results", "--task", "cls-compare", "--submission", sub["id"], "--format", "json",
                    env=service_env, check=True).stdout
    assert r.json() == json.loads(cli)                      # the same JSON as the CLI's
    assert {row["model"] for row in r.json()["rows"]} and all(row["seeds"] == 1 for row in r.json()["rows"])

    listing = client.get(f"/submissions/{sub['id']}/artifacts", headers=AUTH).json()
    with session_scope() as s:
        stored = list(s.scalars(select(Artifact).where(Artifact.submission_id == sub["id"])))
        assert [a["id"] for a in listing] == [a.id for a in stored]
    kinds = {a["media_type"] for a in listing}
    assert {"image/png", "application/octet-stream"} <= kinds     # feature-map figures, CNN weights
    for art in [next(a for a in listing if a["media_type"] == k) for k in sorted(kinds)]:
        r = client.get(f"/artifacts/{art['id']}", headers=AUTH)
        assert r.status_code == 200
        assert r.headers["content-type"].split(";")[0] == art["media_type"]
        assert hashlib.sha256(r.content).hexdigest() == art["sha256"] == r.headers["x-content-sha256"]
        assert len(r.content) == art["size"] > 0
        if art["media_type"] == "image/png":
            assert r.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_embedded_mode_runs_jobs_in_the_api_process(client, migrated_pg, monkeypatch):
    """No broker: the API stores the submission and runs its jobs on its own background thread."""
    monkeypatch.setenv("L335Q_DATABASE_URL", migrated_pg)
    r = client.post("/submissions", content=json.dumps({"task": "cls-compare", "seeds": "3-4", "epochs": 1,
                                                        "train_subset": 300, "test_subset": 300, "batch_size": 100,
                                                        "device": "cpu"}),
                    headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["mode"] == "embedded" and r.json()["jobs"] == 2
    status = wait_finished(client, r.json()["id"])
    assert status["counts"] == {"done": 2}
    assert {j["attempts"] for j in status["job_states"]} == {1}
    with session_scope() as s:
        assert s.get(Submission, r.json()["id"]).spec["seeds"] == [3, 4]
    rows = client.get(f"/results/cls-compare?submission={r.json()['id']}", headers=AUTH).json()["rows"]
    assert rows and all(row["seeds"] == 2 for row in rows)
