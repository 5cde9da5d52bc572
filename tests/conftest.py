"""Shared fixtures: the real PostgreSQL and Redis on this machine, and real `l335q worker` processes.

Environment overrides: L335Q_TEST_PG (server URL without database, default
postgresql://postgres@127.0.0.1:5432) and L335Q_TEST_REDIS (default redis://127.0.0.1:6379).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

PG = os.environ.get("L335Q_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("L335Q_TEST_REDIS", "redis://127.0.0.1:6379")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))        # job_rows: a job's rows as the benchmarks read them


@pytest.fixture(autouse=True)
def embedded_home(tmp_path, monkeypatch):
    """Every test gets its own embedded SQLite file and no broker unless it asks for service mode."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("L335Q_DATABASE_URL", raising=False)
    monkeypatch.delenv("L335Q_BROKER_URL", raising=False)
    monkeypatch.delenv("L335Q_DEVICE", raising=False)
    monkeypatch.delenv("L335Q_FAST", raising=False)
    import l335q.db as db
    db._ready.clear()
    yield tmp_path


@contextlib.contextmanager
def fresh_pg_database(prefix: str):
    """A new PostgreSQL database's URL, dropped (with its connections) afterwards."""
    import psycopg2

    def admin_sql(sql: str) -> None:   # a connection per statement: the fault suite restarts PostgreSQL
        admin = psycopg2.connect(f"{PG}/postgres")
        admin.autocommit = True
        try:
            admin.cursor().execute(sql)
        finally:
            admin.close()

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        from l335q.db import get_engine
        get_engine.cache_clear()
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_pg_database("l335q_test") as url:
        yield url


@pytest.fixture(scope="session")
def migrated_pg(pg_url):
    from l335q.db import upgrade
    upgrade(pg_url)
    return pg_url


def service_mode(db_url: str, monkeypatch) -> dict:
    """Service mode in this process on ``db_url``: PostgreSQL + Redis, a queue of the test's own."""
    queue = f"l335q-test-{uuid.uuid4().hex[:8]}"
    env = {"L335Q_DATABASE_URL": db_url, "L335Q_BROKER_URL": f"{REDIS}/0", "L335Q_TEST_QUEUE": queue}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    import l335q.db as db
    db._ready.clear()
    return env


@pytest.fixture
def service_env(migrated_pg, monkeypatch):
    """Service mode in this process on the session's database."""
    return service_mode(migrated_pg, monkeypatch)


def l335q_cmd(*args, env=None, timeout=600, check=False) -> subprocess.CompletedProcess:
    """Run the real `l335q` console entry point in a subprocess."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "l335q.cli.main", *map(str, args)], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"l335q {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture
def worker(service_env, tmp_path):
    """Start real `l335q worker` processes on the test's queue; yields a function that starts one more."""
    procs = []

    def start(concurrency: int = 1) -> subprocess.Popen:
        log = open(tmp_path / f"worker{len(procs)}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "l335q.cli.main", "worker", "--concurrency", str(concurrency),
                              "--queues", service_env["L335Q_TEST_QUEUE"], "--device", "cpu"],
                             env={**os.environ, **service_env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=log,
                             start_new_session=True)
        procs.append(p)
        return p

    start()
    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture
def one_cpu_thread(monkeypatch):
    """Torch on one CPU thread, in this process and in the processes a test starts (OMP_NUM_THREADS).

    On a shared 2-core machine two OpenMP threads per process thrash as soon as another process is busy
    (measured: an FCN epoch on 2,000 images 0.13 s with one thread, 6 s with two); one thread is steady."""
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
