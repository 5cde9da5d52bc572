"""The database: migrations and models agree (SQLite and PostgreSQL), artifacts, job states."""
from __future__ import annotations

import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select

from l335q import UserError
from l335q.db import (JOB_STATES, Artifact, Base, Job, Submission, get_engine, get_submission, make_artifact,
                      session_scope, upgrade)

TABLES = {"submissions", "jobs", "metrics", "artifacts", "checkpoints"}


def schema_drift(url: str) -> list:
    """What ``alembic revision --autogenerate`` would put in a new migration (empty: no drift)."""
    with get_engine(url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrations_match_models_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    assert TABLES <= set(inspect(get_engine(url)).get_table_names())
    assert schema_drift(url) == []


def test_migrations_match_models_on_postgresql(migrated_pg):
    assert TABLES <= set(inspect(get_engine(migrated_pg)).get_table_names())
    assert schema_drift(migrated_pg) == []


def test_drift_is_detected(tmp_path):
    """The comparison itself can fail: a table the migrations do not create shows up as a diff."""
    from sqlalchemy import Column, Integer, MetaData, Table

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    extra = MetaData()
    for t in Base.metadata.tables.values():
        t.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))
    with get_engine(url).connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), extra)
    assert [d[0] for d in diffs] == ["add_table"] and diffs[0][1].name == "not_migrated"


def test_upgrade_is_idempotent(tmp_path):
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    assert schema_drift(url) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_artifact_bytes_and_sha256_round_trip(backend, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}" if backend == "sqlite" else request.getfixturevalue("migrated_pg")
    upgrade(url)
    data = bytes(range(256)) * 41 + b"\x89PNG\r\n\x1a\n\x00"   # every byte value, NUL included
    with session_scope(url) as s:
        sub = Submission(task="cls-compare", spec={"task": "cls-compare", "seeds": [0]})
        s.add(sub)
        s.flush()
        job = Job(submission_id=sub.id, task="cls-compare", params={"seeds": [0]})
        s.add(job)
        s.flush()
        job.artifacts.append(make_artifact("curve.png", data, seed=3, meta={"epoch": 2}, submission_id=sub.id))
        sub_id, job_id = sub.id, job.id
    with session_scope(url) as s:
        art = s.scalars(select(Artifact).where(Artifact.job_id == job_id)).one()
        assert art.data == data
        assert art.size == len(data)
        assert art.sha256 == hashlib.sha256(data).hexdigest()
        assert (art.media_type, art.seed, art.meta, art.submission_id) == ("image/png", 3, {"epoch": 2}, sub_id)
        job = s.get(Job, job_id)
        assert (job.state, job.attempts, job.worker, job.error) == ("queued", 0, None, None)
    with session_scope(url) as s:               # deleting a submission deletes its jobs and artifacts
        s.delete(s.get(Job, job_id))
        s.delete(s.get(Submission, sub_id))
    with session_scope(url) as s:
        assert s.scalars(select(Artifact).where(Artifact.submission_id == sub_id)).all() == []


def test_job_states_are_the_documented_ones():
    assert set(JOB_STATES) == {"queued", "running", "done", "failed", "diverged", "cancelled"}


def test_missing_submission_is_a_user_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with session_scope(url) as s:
        with pytest.raises(UserError, match="no submission with id 999"):
            get_submission(s, 999)
        with pytest.raises(UserError, match="no submission of task 'cls-compare'"):
            get_submission(s, None, "cls-compare")


def test_service_database_without_tables_says_run_upgrade(pg_url):
    """A fresh PostgreSQL database is not migrated silently: the user is told to run `l335q db upgrade`."""
    import uuid

    import psycopg2

    from l335q.db import ensure_schema

    server, _, _ = pg_url.rpartition("/")
    name = f"l335q_empty_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{server}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        with pytest.raises(UserError, match="run `l335q db upgrade` first"):
            ensure_schema(f"{server}/{name}")
    finally:
        get_engine(f"{server}/{name}").dispose()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _version(path) -> list:
    import sqlite3

    with sqlite3.connect(path) as c:
        return c.execute("SELECT version_num FROM alembic_version").fetchall()


def test_first_runs_at_once_make_one_whole_embedded_database(tmp_path):
    """Four processes use a new embedded database at the same moment: each gets a whole, migrated file (it is
    built beside the path and linked into place), no temporary file is left, and an empty file that a bare
    connection left is replaced."""
    import subprocess
    import sys

    from l335q.config import database_url
    from l335q.db import create_sqlite

    code = "from l335q.db import ensure_schema; ensure_schema()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    path = tmp_path / "xdg" / "l335q" / "l335q.db"
    assert database_url() == f"sqlite:///{path}" and len(_version(path)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["l335q.db"]
    empty = tmp_path / "empty.db"
    empty.touch()
    create_sqlite(empty)
    assert len(_version(empty)) == 1 and TABLES <= set(inspect(get_engine(f"sqlite:///{empty}")).get_table_names())


def test_an_interrupted_first_run_is_one_clear_error(tmp_path):
    """A file with tables but no migration version (what an interrupted first run left before create_sqlite):
    exit 2 and one line that names the file, not a traceback."""
    import sqlite3

    from tests.conftest import l335q_cmd

    path = tmp_path / "xdg" / "l335q" / "l335q.db"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE submissions (id INTEGER PRIMARY KEY)")
    proc = l335q_cmd("results", "--task", "inr-init")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"embedded database {path} is incomplete" in proc.stderr
