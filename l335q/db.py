"""Database models (submissions, jobs, metrics, artifacts) and session helpers.

Works on PostgreSQL (service mode) and SQLite (embedded mode). The schema is owned by the Alembic
migrations in ``migrations/``; ``tests/test_db.py`` proves models and migrations agree.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
import os
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint,
                        create_engine, event, select, text)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

from . import UserError
from .config import database_url, redact

JOB_STATES = ("queued", "running", "done", "failed", "diverged", "cancelled")
FINAL_STATES = ("done", "failed", "diverged", "cancelled")


def utcnow() -> datetime:
    """This process's clock, naive UTC. ``L335Q_CLOCK_SKEW_S`` (a test hook) sets it off by so many seconds: a
    machine whose clock is wrong. Leases and queue times do not read it on PostgreSQL (``db_now``)."""
    return datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=float(os.environ.get(
        "L335Q_CLOCK_SKEW_S") or 0))


def db_now(s: Session) -> datetime:
    """THE clock of leases, heartbeats and queue times: the database's (naive UTC), so that workers and submitters
    whose own clocks disagree by minutes agree on how old a lease is. SQLite (embedded mode, one machine): this
    process's clock."""
    if s.get_bind().dialect.name == "postgresql":
        return s.scalar(text("SELECT timezone('utc', clock_timestamp())"))
    return utcnow()


class Base(DeclarativeBase):
    pass


class Submission(Base):
    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str | None] = mapped_column(String(200))
    spec: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the notification sent when its last job ends (l335q.notify): None (not yet), sending, retrying, sent, failed
    notify_state: Mapped[str | None] = mapped_column(String(16))
    notify_at: Mapped[datetime | None] = mapped_column(DateTime)      # the next try (or a claim's expiry)
    notify_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    notify_error: Mapped[str | None] = mapped_column(Text)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime)
    jobs: Mapped[list["Job"]] = relationship(back_populates="submission", order_by="Job.id")


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict | None] = mapped_column(JSON)
    # the lease (see l335q.leases): who holds a running job, until when it counts as alive
    claim: Mapped[str | None] = mapped_column(String(32))          # token of the current attempt
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)
    lease_s: Mapped[float | None] = mapped_column(Float)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime)    # last (re)queued or (re)published
    queue: Mapped[str | None] = mapped_column(String(100))          # the broker queue it was published on
    max_attempts: Mapped[int | None] = mapped_column(Integer)       # None: the worker's setting
    time_limit_s: Mapped[float | None] = mapped_column(Float)       # None: the worker's L335Q_TIME_LIMIT_S
    progress: Mapped[dict | None] = mapped_column(JSON)             # {"done", "total", "unit"} while running
    result_key: Mapped[str | None] = mapped_column(String(64), index=True)   # what decides its numbers (l335q.reuse)
    submission: Mapped[Submission] = relationship(back_populates="jobs")
    metrics: Mapped[list["Metric"]] = relationship(cascade="all, delete-orphan", order_by="Metric.id")
    artifacts: Mapped[list["Artifact"]] = relationship(cascade="all, delete-orphan", order_by="Artifact.id",
                                                       foreign_keys="Artifact.job_id")


class Metric(Base):
    """One number: ``name`` of ``seed`` at ``step`` (epoch or fitting step; None for a final value)."""
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seed: Mapped[int | None] = mapped_column(Integer)
    step: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (Index("ix_metrics_job_name", "job_id", "name"),)


class Artifact(Base):
    """Bytes (PNG images, weights, uploaded inputs) of a job, or of a submission when job_id is None."""
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    media_type: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict | None] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Checkpoint(Base):
    """A running job's saved training state: one row per training stage (the n-th model the job trains)."""
    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    stage: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)          # epochs or fitting steps done
    data: Mapped[bytes] = mapped_column(LargeBinary)    # torch.save of tensors and plain values
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("job_id", "stage", name="uq_checkpoints_job_stage"),)


def make_artifact(name: str, data: bytes, media_type: str = "image/png", **fields) -> Artifact:
    return Artifact(name=name, data=data, media_type=media_type, size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(), **fields)


# ----------------------------------------------------------------------------- engine and sessions



def _migrations_dir() -> Path:
    from . import migrations  # the top-level migrations/ folder, mapped into the package

    return Path(migrations.__file__).resolve().parent


def driver_url(url: str) -> str:
    """``postgresql://`` means psycopg2 (the installed driver; SQLAlchemy 2.1 would pick psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", driver_url(url).replace("%", "%%"))
    return cfg


_ENGINES: list = []      # every engine made in this process (for after_fork)


@lru_cache(maxsize=8)
def get_engine(url: str | None = None):
    url = url or database_url()
    kwargs = {"future": True, "pool_pre_ping": True, "pool_recycle": 1800}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
    engine = create_engine(driver_url(url), **kwargs)
    if url.startswith("sqlite"):
        @event.listens_for(engine, "connect")
        def _fk_on(dbapi_conn, _):  # SQLite enforces foreign keys only when asked
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
    _ENGINES.append(engine)
    return engine


def after_fork() -> None:
    """In a forked child (a Celery pool process): never reuse the parent's pooled connections.

    Two processes talking over one inherited PostgreSQL socket corrupt each other's protocol state
    ("error with status PGRES_TUPLES_OK and no message from the libpq"). ``dispose(close=False)`` drops
    the pool without closing the parent's sockets; this process then opens its own."""
    for engine in _ENGINES:
        engine.dispose(close=False)


def upgrade(url: str | None = None) -> None:
    """Bring the database to the newest migration (``l335q db upgrade``)."""
    from alembic import command

    url = url or database_url()
    check_reachable(url)
    command.upgrade(alembic_config(url), "head")


def create_sqlite(path: Path) -> bool:
    """A new embedded database appears whole or not at all: it is migrated in a temporary file beside ``path`` and
    then linked into place (``os.link`` fails when another first run got there first; its file is kept). A first
    run killed mid-migration, or two at once, used to leave tables without a migration version behind (SQLite's
    DDL is not transactional under alembic), and every later command failed. True when this call made it."""
    import os
    import uuid

    from alembic import command

    if path.exists() and path.stat().st_size > 0:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        command.upgrade(alembic_config(f"sqlite:///{tmp}"), "head")
        if path.exists() and path.stat().st_size == 0:      # an empty file a bare connection left (not ours)
            path.unlink(missing_ok=True)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)


def _sqlite_file(url: str) -> Path | None:
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    return Path(path) if path and path != ":memory:" else None


def check_reachable(url: str) -> None:
    try:
        with get_engine(url).connect():
            pass
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "connection failed"
        raise UserError(f"database unreachable at {redact(url)}: {reason}") from None


_ready: set[str] = set()


def ensure_schema(url: str | None = None) -> None:
    """Embedded mode creates/migrates its SQLite file on first use; service mode needs ``db upgrade``."""
    url = url or database_url()
    if url in _ready:
        return
    path = _sqlite_file(url)
    made = path is not None and create_sqlite(path)           # made here: migrated already
    check_reachable(url)
    if url.startswith("sqlite"):
        try:
            if not made:
                upgrade(url)
        except OperationalError as exc:
            if "already exists" not in str(exc.orig):
                raise
            raise UserError(f"embedded database {path or url} is incomplete (tables without a migration version: "
                            "an earlier first run was interrupted); move it away and run again") from None
    else:
        from sqlalchemy import inspect

        if not inspect(get_engine(url)).has_table("jobs"):
            raise UserError(f"database at {redact(url)} has no l335q tables: run `l335q db upgrade` first")
    _ready.add(url)


def with_retries(fn, *, tries: int = 8, first_wait: float = 0.5, what: str = "database call"):
    """``fn()``, again with back-off (0.5, 1, 2 … s) while the database is unreachable (a restart, a dropped
    connection); the last failure is raised. Only for whole transactions that are safe to repeat."""
    import logging
    import time

    from sqlalchemy.exc import DBAPIError

    wait = first_wait
    for attempt in range(1, tries + 1):
        try:
            return fn()
        except DBAPIError as exc:
            lost = isinstance(exc, OperationalError) or exc.connection_invalidated
            if attempt == tries or not lost:
                raise
            logging.getLogger("l335q.db").warning("%s failed (%s); retrying in %.1f s", what,
                                                  str(exc.orig or exc).strip().splitlines()[0], wait)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


@contextmanager
def session_scope(url: str | None = None):
    """A session that commits on success and rolls back on error."""
    url = url or database_url()
    ensure_schema(url)
    session = sessionmaker(get_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def latest_submission(session: Session, task: str) -> Submission | None:
    return session.scalars(select(Submission).where(Submission.task == task)
                           .order_by(Submission.id.desc()).limit(1)).first()


def get_submission(session: Session, submission_id: int | None, task: str | None = None) -> Submission:
    if submission_id is None:
        sub = latest_submission(session, task) if task else None
        if sub is None:
            raise UserError(f"no submission of task {task!r} in the database yet")
        return sub
    sub = session.get(Submission, submission_id)
    if sub is None:
        raise UserError(f"no submission with id {submission_id}")
    if task and sub.task != task:
        raise UserError(f"submission {submission_id} is a {sub.task!r} submission, not {task!r}")
    return sub


def dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
