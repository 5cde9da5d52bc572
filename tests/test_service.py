"""Service mode for real: `l335q worker` processes on Redis, results in PostgreSQL, exactly once.

Every test here talks to the real Redis and PostgreSQL of this machine, on a queue of its own.
Training is tiny (a few thousand images, 1-2 epochs, CPU) so the file runs in a few minutes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from l335q.db import Job, Metric, Submission, session_scope
from l335q.runner import execute_job
from l335q.submit import create_submission

from conftest import l335q_cmd

# fresh: every test runs it (the service tests share one database; no reuse, l335q.reuse)
TINY = {"task": "cls-compare", "seeds": [0], "epochs": 1, "train_subset": 500, "test_subset": 500, "batch_size": 100,
        "device": "cpu", "fresh": True}
ROW_KEYS = {"model", "params", "seeds", "train_acc_mean", "train_acc_sd", "test_acc_mean", "test_acc_sd", "gap",
            "diagnosis"}
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_cpu_thread")]


def write_spec(path: Path, **keys) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(keys, sort_keys=False))
    return path


def job_row(job_id: int) -> Job:
    with session_scope() as s:
        return s.get(Job, job_id)


def metric_keys(job_id: int) -> list[tuple]:
    with session_scope() as s:
        return [tuple(r) for r in s.execute(select(Metric.seed, Metric.step, Metric.name)
                                            .where(Metric.job_id == job_id).order_by(Metric.id))]


def wait_for(predicate, timeout: float, what: str, poll: float = 0.25, logs: list[Path] = ()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def start_worker(env: dict, log: Path, concurrency: int = 1) -> subprocess.Popen:
    """A real `l335q worker` process (its own session, so its pool can be killed with it)."""
    return subprocess.Popen([sys.executable, "-m", "l335q.cli.main", "worker", "--queues", env["L335Q_TEST_QUEUE"],
                             "--device", "cpu", "--concurrency", str(concurrency)], env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def queue_len(env: dict) -> int:
    return redis.Redis.from_url(env["L335Q_BROKER_URL"]).llen(env["L335Q_TEST_QUEUE"])


# ----------------------------------------------------------------------------- (a) a submission end to end

def test_worker_runs_a_cls_compare_submission_to_the_end(worker, service_env, tmp_path):
    spec = write_spec(tmp_path / "small.yaml", task="cls-compare", title="service test", seeds=[0, 1], epochs=2,
                      train_subset=2000, test_subset=1000, batch_size=64, device="cpu")
    q = service_env["L335Q_TEST_QUEUE"]
    sub = l335q_cmd("submit", spec, "--queue", q, "--wait", env=service_env, timeout=300)
    assert sub.returncode == 0, sub.stderr + (tmp_path / "worker0.log").read_text()[-3000:]
    sub_id = int(sub.stdout.split()[0])
    assert "2 done" in sub.stderr                          # the progress line after --wait

    with session_scope() as s:                              # the results are in PostgreSQL
        assert s.bind.dialect.name == "postgresql"
        sub_row = s.get(Submission, sub_id)
        jobs = list(s.scalars(select(Job).where(Job.submission_id == sub_id)))
        assert sub_row.title == "service test" and len(jobs) == 2
        for job in jobs:
            assert (job.state, job.attempts, job.error) == ("done", 1, None)
            assert job.worker and job.worker.startswith("celery@") and job.seconds > 0
            epochs = s.scalars(select(func.count(func.distinct(Metric.step))).where(Metric.job_id == job.id,
                                                                                     Metric.step.is_not(None)))
            assert epochs.one() == 2

    out = l335q_cmd("results", "--task", "cls-compare", "--format", "json", env=service_env, check=True).stdout
    table = json.loads(out)
    assert table["task"] == "cls-compare" and table["submission"] == sub_id
    assert len(table["rows"]) == 2
    for row in table["rows"]:
        assert ROW_KEYS <= set(row)
        assert row["seeds"] == 2
        assert 0.1 < row["test_acc_mean"] <= 1 and row["test_acc_sd"] >= 0
        assert row["gap"] == pytest.approx(row["train_acc_mean"] - row["test_acc_mean"], abs=1e-9)
    status = l335q_cmd("status", sub_id, env=service_env, check=True).stdout
    assert "2 jobs: 2 done" in status


# ----------------------------------------------------------------------------- (b) exactly once

def test_execute_job_twice_directly_leaves_one_result(service_env):
    _, (job_id,) = create_submission(TINY)
    assert execute_job(job_id) == "done"
    first = metric_keys(job_id)
    assert first and len(first) == len(set(first))
    assert execute_job(job_id) is None                     # already final: not run again
    job = job_row(job_id)
    assert (job.state, job.attempts) == ("done", 1)
    assert metric_keys(job_id) == first


def test_same_job_delivered_twice_to_a_worker_runs_once(worker, service_env, tmp_path):
    from l335q.worker.app import enqueue

    _, (job_id,) = create_submission(TINY)
    enqueue([job_id, job_id], service_env["L335Q_TEST_QUEUE"])
    log = tmp_path / "worker0.log"
    wait_for(lambda: job_row(job_id).state == "done", 180, "the job to be done", logs=[log])
    wait_for(lambda: f"job {job_id}: already final" in log.read_text(), 60,
             "the second delivery to be consumed", logs=[log])
    assert queue_len(service_env) == 0
    job = job_row(job_id)
    assert (job.state, job.attempts) == ("done", 1)
    keys = metric_keys(job_id)
    assert keys and len(keys) == len(set(keys))


# (c) a worker dying mid-job: tests/test_faults.py


# ----------------------------------------------------------------------------- (d) unreachable services

DEAD_DB = "postgresql://postgres@127.0.0.1:1/x"
DEAD_BROKER = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize("args", [("submit", "SPEC"), ("status",), ("results", "--task", "cls-compare")])
@pytest.mark.parametrize("broker", [None, "redis"], ids=["embedded", "service"])
def test_unreachable_database_is_one_line(args, broker, service_env, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", **TINY)
    env = {**service_env, "L335Q_DATABASE_URL": DEAD_DB}
    if broker is None:
        env["L335Q_BROKER_URL"] = ""
    proc = l335q_cmd(*[spec if a == "SPEC" else a for a in args], env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: database unreachable at postgresql://postgres@127.0.0.1:1/x")


def test_unreachable_broker_is_one_line_and_writes_nothing(service_env, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", **TINY)
    with session_scope() as s:
        before = s.scalar(select(func.count()).select_from(Submission))
    proc = l335q_cmd("submit", spec, env={**service_env, "L335Q_BROKER_URL": DEAD_BROKER}, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(
        "error: broker unreachable at redis://127.0.0.1:1/0"), proc.stderr
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == before


@pytest.mark.parametrize("dead", ["database", "broker"])
def test_worker_with_an_unreachable_service_exits_2(dead, service_env):
    env = {**service_env, **({"L335Q_DATABASE_URL": DEAD_DB} if dead == "database" else {"L335Q_BROKER_URL": DEAD_BROKER})}
    proc = l335q_cmd("worker", "--queues", service_env["L335Q_TEST_QUEUE"], env=env, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith(f"error: {dead} unreachable at ")


def test_a_pool_of_two_runs_many_short_jobs_each_once(service_env, tmp_path):
    """`--concurrency 2` forks two pool processes from a parent that has already talked to PostgreSQL: each
    must open its own connections (sharing the parent's socket corrupts both: jobs left 'running')."""
    spec = write_spec(tmp_path / "many.yaml", task="inr-init", image="sample:camera", resolution=8, steps=20,
                      depth=2, width=16, initialiser=["default", "xavier-normal"], seeds="0-9", seed_group=1,
                      device="cpu")
    out = l335q_cmd("submit", spec, "--queue", service_env["L335Q_TEST_QUEUE"], env=service_env, check=True)
    sub_id = int(out.stdout.split()[-1])
    log = tmp_path / "pool.log"
    proc = start_worker(service_env, log, concurrency=2)
    try:
        def final():
            with session_scope() as s:
                jobs = list(s.scalars(select(Job).where(Job.submission_id == sub_id)))
                return jobs if all(j.state in ("done", "failed", "diverged") for j in jobs) else None
        jobs = wait_for(final, 240, "all 20 jobs final", logs=[log])
    finally:
        stop_worker(proc)
    assert len(jobs) == 20
    assert [(j.id, j.state, j.error) for j in jobs if j.state != "done"] == []
    assert {j.attempts for j in jobs} == {1}
    assert "PGRES" not in log.read_text() and "DatabaseError" not in log.read_text()


# ----------------------------------------------------------------------------- (e) honest exits and status

def test_submit_wait_exits_1_and_names_each_error_with_its_jobs(service_env, tmp_path):
    """Jobs that fail (here: CUDA asked for on a machine without it) make `submit --wait` exit 1 with one
    line per distinct error listing the job ids; `status ID` shows each failed job's error."""
    log = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "l335q.cli.main", "worker", "--queues", service_env["L335Q_TEST_QUEUE"]],
                            env={**os.environ, **service_env}, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        spec = write_spec(tmp_path / "cuda.yaml", **{**TINY, "seeds": "0-1", "device": "cuda"})
        out = l335q_cmd("submit", spec, "--wait", "--queue", service_env["L335Q_TEST_QUEUE"], env=service_env,
                        timeout=300)
    finally:
        stop_worker(proc)
    assert out.returncode == 1, out.stderr + log.read_text()[-2000:]
    sub_id = int(out.stdout.split()[0])
    with session_scope() as s:
        ids = list(s.scalars(select(Job.id).where(Job.submission_id == sub_id).order_by(Job.id)))
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: jobs {ids[0]}, {ids[1]}: device 'cuda' requested but no CUDA device is available"]
    status = l335q_cmd("status", sub_id, env=service_env, check=True).stdout
    for job_id in ids:
        assert f"job {job_id} failed: device 'cuda' requested" in status


def test_status_shows_a_running_jobs_worker_progress_and_lease(service_env, tmp_path):
    env = {**service_env, "L335Q_LEASE_S": "3"}
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        spec = write_spec(tmp_path / "long.yaml", **{**TINY, "epochs": 4, "train_subset": 3000})
        sub_id = int(l335q_cmd("submit", spec, "--queue", env["L335Q_TEST_QUEUE"], env=env, check=True).stdout.split()[0])

        def running_line():
            out = l335q_cmd("status", sub_id, env=env, check=True).stdout
            lines = [x for x in out.splitlines() if " running on " in x and "epoch" in x]
            return lines[0] if lines else None
        line = wait_for(running_line, 240, "a running job with progress in `status`", poll=1, logs=[log])
    finally:
        stop_worker(proc)
    assert "running on celery@" in line and " of 4" in line and "lease renewed" in line and "(lease 3 s)" in line, line


def test_worker_warns_when_redis_may_evict_messages(service_env, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--maxmemory-policy", "allkeys-lru"], stdout=subprocess.DEVNULL)
    log = tmp_path / "worker.log"
    try:
        wait_for(lambda: redis.Redis(port=port).ping(), 20, "the test Redis to start")
        proc = start_worker({**service_env, "L335Q_BROKER_URL": f"redis://127.0.0.1:{port}/0"}, log)
        try:
            wait_for(lambda: "maxmemory-policy" in log.read_text(), 60, "the warning", logs=[log])
        finally:
            stop_worker(proc)
    finally:
        server.terminate()
        server.wait()
    assert "warning: Redis maxmemory-policy is 'allkeys-lru'" in log.read_text()
