"""Results reused across submissions (``l335q.reuse``), grids extended, merged views and the plan (``l335q.plan``).

Embedded mode (a SQLite file per test) unless a test asks for the real PostgreSQL and a worker."""
from __future__ import annotations

import io
import json
import shutil
import time

import numpy as np
import pytest
from sqlalchemy import func, select, update

from l335q import reuse, service
from l335q.db import Artifact, Job, Metric, Submission, session_scope
from l335q.plan import plan
from l335q.results import load, render
from l335q.tasks import get_kind

from conftest import l335q_cmd
from job_rows import artifact_rows, metric_rows

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SPEC = {"task": "inr-init", "image": "sample:camera", "resolution": 10, "steps": 60, "depth": 3, "width": 16,
        "initialiser": ["default", "xavier-normal"], "seeds": "0-3", "seed_group": 2, "device": "cpu"}


def fits(sub) -> list[int]:
    """Seeds fitted by a submission's own jobs (not reused), in order."""
    with session_scope() as s:
        return sorted(seed for p in s.scalars(select(Job.params).where(Job.id.in_(sub.job_ids))) for seed in p["seeds"])


def table(sub_id: int, merge: bool = False) -> list[dict]:
    with session_scope() as s:
        return json.loads(render(get_kind("inr-init").results(load(s, sub_id, "inr-init", merge=merge)), "json"))["rows"]


def by_seed(sub_id: int) -> dict[tuple, list]:
    """(initialiser, seed) -> that seed's metric rows, over every job of the submission (timings left out)."""
    out: dict[tuple, list] = {}
    with session_scope() as s:
        jobs = s.execute(select(Job.id, Job.params).where(Job.submission_id == sub_id)).all()
    for job_id, params in jobs:
        for row in metric_rows(job_id):
            out.setdefault((params["initialiser"], row[0]), []).append(row)
    return out


def counts() -> dict[str, int]:
    with session_scope() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in (Submission, Job, Metric, Artifact)}


def test_the_second_submission_runs_no_fit_and_gives_the_same_table_and_numbers_as_a_fresh_run():
    first = service.submit(SPEC)
    again = service.submit(SPEC)
    fresh = service.submit({**SPEC, "fresh": True})
    assert fits(first) == fits(fresh) == sorted([0, 1, 2, 3] * 2)
    assert again.job_ids == [] and len(again.reused_ids) == 4
    assert table(again.id) == table(first.id)
    assert by_seed(again.id) == by_seed(first.id) == by_seed(fresh.id)       # bit for bit on the CPU
    with session_scope() as s:
        jobs = list(s.scalars(select(Job).where(Job.submission_id == again.id)))
    assert {j.state for j in jobs} == {"done"}
    assert all(j.result["note"] == f"reused from submission {first.id}" for j in jobs)
    # the images of its seeds came along, byte for byte
    with session_scope() as s:
        pairs = s.execute(select(Job.id, Job.params).where(Job.submission_id.in_([first.id, again.id]))).all()
    images = {}
    for job_id, params in pairs:
        images.setdefault((params["initialiser"], tuple(params["seeds"])), []).append(artifact_rows(job_id))
    assert all(len(v) == 2 and v[0] == v[1] and v[0] for v in images.values())


def test_extending_seeds_fits_only_the_new_ones_and_a_merged_table_counts_each_seed_once():
    one = {**SPEC, "initialiser": "default", "seed_group": 1, "title": "study"}
    first = service.submit(one)
    grown = service.submit({**one, "seeds": "0-7"})
    assert fits(first) == [0, 1, 2, 3] and fits(grown) == [4, 5, 6, 7]
    assert table(grown.id)[0]["seeds"] == 8
    shown = l335q_cmd("results", "--task", "inr-init", "--submission", str(grown.id), check=True).stdout
    assert f"4 seeds (4 jobs) reused from submission {first.id} " in shown
    redo = service.submit({**one, "seeds": "0-5", "fresh": True})
    assert fits(redo) == [0, 1, 2, 3, 4, 5]
    assert table(redo.id, merge=True)[0]["seeds"] == 8              # not 4 + 8 + 6
    out = l335q_cmd("results", "--task", "inr-init", "--merge", check=True).stdout
    assert f"merged: submissions {first.id}, {grown.id}, {redo.id}" in out


def test_a_changed_param_image_byte_or_engine_version_runs_everything_again(tmp_path, monkeypatch):
    from PIL import Image

    one = {**SPEC, "initialiser": "default"}
    service.submit(one)
    assert fits(service.submit({**one, "steps": 61})) == [0, 1, 2, 3]

    pixels = (np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8)
    path = tmp_path / "tile.png"
    Image.fromarray(pixels).save(path)
    on_file = {**one, "image": str(path)}
    service.submit(on_file)
    assert fits(service.submit(on_file)) == []
    pixels[3, 4, 1] ^= 1
    Image.fromarray(pixels).save(path)
    assert fits(service.submit(on_file)) == [0, 1, 2, 3]

    assert fits(service.submit(one)) == []
    monkeypatch.setattr(reuse, "recorded", lambda: {**json.loads(reuse.VERSIONS_FILE.read_text()),
                                                     "fields": [{"version": 999, "sha256": ""}]})
    assert fits(service.submit(one)) == [0, 1, 2, 3]


def test_cancelled_and_diverged_results_are_never_reused():
    from l335q.submit import create_submission

    one = {**SPEC, "initialiser": "default"}
    cancelled = create_submission(one)
    service.cancel(cancelled.id)
    ran = service.submit(one)
    assert fits(ran) == [0, 1, 2, 3]
    with session_scope() as s:
        s.execute(update(Job).where(Job.submission_id == ran.id).values(state="diverged"))
    assert fits(service.submit(one)) == [0, 1, 2, 3]


def test_a_dry_run_writes_nothing_and_its_estimate_is_within_2x_of_the_run(tmp_path):
    one = {**SPEC, "initialiser": "default", "seed_group": 1, "steps": 300, "resolution": 16, "width": 32}
    assert plan(one).estimated_seconds is None                         # nothing comparable ran yet
    service.submit(one)
    spec = tmp_path / "more.yaml"
    spec.write_text(json.dumps({**one, "seeds": "4-7"}))             # JSON is YAML
    before = counts()
    shown = json.loads(l335q_cmd("submit", spec, "--dry-run", "--format", "json", check=True).stdout)
    assert counts() == before
    assert (shown["jobs"], shown["seeds"], shown["reused"], shown["to_run"]) == (4, 4, 0, 4)
    text = l335q_cmd("submit", spec, "--dry-run", check=True).stdout
    assert "plan: 4 jobs, 4 seeds: 0 reused, 4 to run" in text and "estimate:" in text
    more = service.submit({**one, "seeds": "4-7"})
    with session_scope() as s:
        measured = sum(s.scalars(select(Job.seconds).where(Job.id.in_(more.job_ids))))
    assert 0.5 <= shown["estimated_seconds"] / measured <= 2.0, (shown, measured)
    again = plan({**one, "seeds": "0-9"})
    assert (again.reused, again.to_run) == (8, 2)


def test_fresh_on_the_command_line(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({**SPEC, "initialiser": "default"}))
    l335q_cmd("submit", spec, check=True)
    l335q_cmd("submit", spec, check=True)
    l335q_cmd("submit", spec, "--fresh", check=True)
    with session_scope() as s:
        ran = [s.scalar(select(func.count()).select_from(Job).where(Job.submission_id == i, Job.attempts > 0))
               for i in (1, 2, 3)]
    assert ran == [2, 0, 2]


def test_the_engine_versions_are_recorded_for_the_files_as_they_are(tmp_path, monkeypatch):
    assert reuse.stale() == [], ("an engine family's files changed: if its numbers may change, record a new "
                                 "version with `python -m l335q.reuse --bump`")
    copy = tmp_path / "l335q"
    shutil.copytree(reuse.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(reuse, "PACKAGE", copy)
    assert reuse.stale() == []
    engine = copy / "fields" / "engine.py"
    engine.write_text(engine.read_text() + "\n")
    assert reuse.stale() == ["fields"]


@pytest.mark.slow
def test_service_mode_a_repeated_submission_is_done_at_once_and_publishes_nothing(worker, service_env):
    from l335q.worker.app import _redis

    spec = {**SPEC, "initialiser": "default", "seeds": "0-3", "seed_group": 2}
    first = service.submit(spec, queue=service_env["L335Q_TEST_QUEUE"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and service.job_counts(first.id).get("done", 0) < 2:
        time.sleep(0.5)
    redis = _redis()
    while time.monotonic() < deadline and redis.llen(service_env["L335Q_TEST_QUEUE"]):
        time.sleep(0.5)                          # a pack's other message: a no-op the worker consumes
    again = service.submit(spec, queue=service_env["L335Q_TEST_QUEUE"])
    assert again.job_ids == [] and service.job_counts(again.id) == {"done": 2}
    assert redis.llen(service_env["L335Q_TEST_QUEUE"]) == 0
    assert by_seed(again.id) == by_seed(first.id)


def test_the_api_answers_a_dry_run_with_the_plan(monkeypatch):
    from fastapi.testclient import TestClient

    from l335q.api.app import app

    service.submit({**SPEC, "initialiser": "default"})
    monkeypatch.setenv("L335Q_API_TOKEN", "tok-reuse")
    before = counts()
    with TestClient(app) as client:
        r = client.post("/submissions?dry_run=true", content=json.dumps({**SPEC, "seeds": "0-5"}),
                        headers={"Authorization": "Bearer tok-reuse", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("jobs", "seeds", "reused", "to_run")} == {"jobs": 6, "seeds": 12, "reused": 4,
                                                                              "to_run": 8}
    assert r.json()["estimated_seconds"] > 0
    assert counts() == before
