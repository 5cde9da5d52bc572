"""Field jobs through the engine's fast path (``L335Q_FAST``, resolved in ``fields.jobs.fast_for``): on the CPU
(``L335Q_FAST=1``: the same steps eagerly) every field kind writes exactly the rows and images it writes through
the plain loop, and a job stopped and resumed through the fast path ends with the numbers of an uninterrupted
fit. Bit for bit: on the CPU both paths run the same ``_step`` on the same tensors in the same order."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from l335q.db import Job, session_scope
from l335q.fields.jobs import fast_for
from l335q.runner import execute_job
from l335q.submit import create_submission
from test_checkpoints import FIELD, numbers, run_until_stopped
from test_packing import rows

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SMALL = {"fresh": True, "image": "sample:camera", "resolution": 8, "steps": 60, "depth": 3, "width": 16, "seeds": "0-1",
         "device": "cpu"}
GAUSS = {"encoding": "gaussian", "features": 8, "sigma": 3}
SPECS = {
    "inr-init": {**SMALL, "initialiser": "default", "output": "relu", "seed_group": 2},
    "inr-arch": {**SMALL, **GAUSS, "loss": "huber", "split": "every-other"},
    "ffn-sigma": {**SMALL, "features": 8, "sigma": [2], "auto": False},
    "upsample": {**SMALL, **GAUSS, "factor": 2, "store_upsampled": True},
}


def run_job(spec: dict) -> tuple[list, list, dict]:
    """One job of ``spec`` run in this process: its rows, its images and its summary."""
    _, (job_id,) = create_submission(spec)
    assert execute_job(job_id) in ("done", "diverged")
    with session_scope() as s:
        result = s.get(Job, job_id).result
    return *rows(job_id), result


def test_the_setting_resolves_in_one_place(monkeypatch):
    assert not fast_for("cuda") and not fast_for("cpu")                             # default: off
    monkeypatch.setenv("L335Q_FAST", "auto")
    assert fast_for("cuda") and fast_for("cuda:1") and not fast_for("cpu")          # auto: on CUDA only
    for on in ("1", "on", " ON "):
        monkeypatch.setenv("L335Q_FAST", on)
        assert fast_for("cpu") and fast_for("cuda:0")
    for off in ("0", "off"):
        monkeypatch.setenv("L335Q_FAST", off)
        assert not fast_for("cpu") and not fast_for("cuda:0")      # (bad values: tests/test_fast.py)


@pytest.mark.parametrize("task", SPECS)
def test_a_field_job_writes_the_same_rows_through_the_fast_path(task, monkeypatch):
    spec = {"task": task, **SPECS[task]}
    monkeypatch.setenv("L335Q_FAST", "0")
    plain_metrics, plain_images, plain = run_job(spec)
    monkeypatch.setenv("L335Q_FAST", "1")
    fast_metrics, fast_images, fast = run_job(spec)
    assert plain["fast"] is False and fast["fast"] is True           # each took the path asked for
    assert len(fast_metrics) > 2 and fast_images
    assert fast_metrics == plain_metrics and fast_images == plain_images


def test_stopped_and_resumed_through_the_fast_path_equals_uninterrupted(monkeypatch):
    # 1500 steps, not test_checkpoints' 400: 400 take ~0.17 s here, and a stop seen at step 150 can arrive (row
    # every 0.1 s, polled every 0.05 s) after the last step (measured: 1 run in 4 of that test finished instead)
    spec = {**FIELD, "steps": 1500}
    monkeypatch.setenv("L335Q_LEASE_S", "0.3")           # progress reaches the row every 0.1 s
    monkeypatch.setenv("L335Q_CHECKPOINT_S", "3600")     # no periodic save: the stop's own save is what resumes
    monkeypatch.setenv("L335Q_FAST", "0")
    _, (plain,) = create_submission(spec)
    assert execute_job(plain) == "done"
    monkeypatch.setenv("L335Q_FAST", "1")
    _, (job_id,) = create_submission(spec)
    run_until_stopped(job_id, 150, 0)
    assert execute_job(job_id) == "done"
    with session_scope() as s:
        assert s.get(Job, job_id).result["fast"] is True and s.get(Job, job_id).attempts == 1
    assert numbers(job_id) == numbers(plain)


def test_gpu_jobs_bench_tiny_runs_every_kind_plain_fast_and_resumed(tmp_path):
    """bench/gpu_jobs.py (the evidence for L335Q_FAST's default, meant for a GPU) at tiny sizes on the CPU, without
    the packages the GPU machine lacks beyond SQLAlchemy/alembic/Mako: every kind done three ways; fields bit for
    bit; classification within test_fast's tolerance (3 images, 2e-3); stopped mid-run + resumed == uninterrupted."""
    out = tmp_path / "jobs.json"
    code = ("import sys\nfor m in ('celery', 'redis', 'psycopg2', 'fastapi', 'uvicorn'): sys.modules[m] = None\n"
            f"sys.argv = ['gpu_jobs.py', '--tiny', '--device', 'cpu', '--out', {str(out)!r}]\n"
            f"import runpy; runpy.run_path({str(ROOT / 'bench' / 'gpu_jobs.py')!r}, run_name='__main__')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "L335Q_DATABASE_URL": "postgresql://x"}    # not used: its own db
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["errors"] == {} and r["skipped"] == [] and r["fast_setting"] == "on"
    assert list(r["kinds"]) == ["cls-compare", "cls-sweep", "inr-init", "inr-arch", "ffn-sigma", "upsample"]
    for kind, k in r["kinds"].items():
        plain, fast, stopped = k["plain"], k["fast"], k["stopped"]
        assert (plain["state"], fast["state"], stopped["first_state"], stopped["state"]) == (
            "done", "done", "released", "done"), kind
        assert plain["error"] is fast["error"] is stopped["error"] is None and stopped["attempts"] == 1
        assert stopped["stop_requested_at"] and k["resumed_equals_fast"], kind
        assert set(k["resumed_vs_fast"].values()) == {0.0}, kind
        (ckpt,) = stopped["checkpoints"]                  # saved mid-run: what the resumed run started from
        assert (stopped["plan"] is None) == kind.startswith("cls"), kind     # field fits plan their seed chunks
        total = k["spec"]["epochs"] if kind.startswith("cls") else k["spec"]["steps"]
        assert ckpt["stage"] == k["stop_at"]["stage"] and ckpt["step"] < total, kind
        diffs = k["fast_vs_plain"]
        if kind.startswith("cls"):
            assert ckpt["fused"] and fast["fast_path"] is None       # the fused loop; cls jobs do not say it
            for name, d in diffs.items():
                what = name.split("/")[-1]
                images = k["spec"]["train_subset" if what.startswith("train") else "test_subset"]
                limit = 3.01 / images if what.endswith("_acc") else 2e-3 if what.endswith("_loss") else 0.0
                assert d <= limit, (kind, name, d)
        else:
            assert (plain["fast_path"], fast["fast_path"]) == (False, True), kind
            assert len(diffs) >= 2 and set(diffs.values()) == {0.0}, kind
    assert "resumed==fast" in p.stdout and "skipped: none | errors: none" in p.stdout
