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
