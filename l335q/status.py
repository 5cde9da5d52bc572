"""``l335q status`` in a fraction of a second: job counts and the failed / running jobs' lines read with the
database driver itself (sqlite3 or psycopg2) and plain SQL, without SQLAlchemy, whose import alone takes
longer than the whole command may (a fresh CLI process on a 10,000-job grid, ``bench/grid.py``).

Read-only and about the ``submissions`` and ``jobs`` tables only (the schema is ``l335q.db``'s); every
other command goes through ``l335q.db``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import UserError


def last_line(error: str | None) -> str:
    """The last line of a job's error (the exception's message after its traceback)."""
    return ((error or "").strip().splitlines() or [""])[-1]


@dataclass
class SubmissionStatus:
    id: int
    task: str
    title: str | None
    notify_state: str | None = None                     # its notification (l335q.notify), None: not tried
    notify_attempts: int = 0
    notify_error: str | None = None
    notified_at: object = None
    counts: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)     # failed and running jobs (asked for by ID only)

    def line(self) -> str:
        states = ", ".join(f"{self.counts[k]} {k}" for k in sorted(self.counts))
        total = sum(self.counts.values())
        notified = f"  [notification {self.notify_state}]" if self.notify_state else ""
        return f"{self.id:>5}  {self.task:<12} {total:>4} jobs: {states}{notified}  {self.title or ''}".rstrip()

    def notification(self) -> str | None:
        return notification(self.notify_state, self.notify_attempts, self.notify_error, self.notified_at)


def notification(state: str | None, attempts: int, error: str | None, notified_at) -> str | None:
    """One line on a submission's notification (``l335q.notify``) for ``l335q status`` and the web view; None
    when none was tried."""
    if state is None:
        return None
    if state == "sent":
        return f"notification sent {str(notified_at)[:19]} UTC" + (f" (try {attempts})" if attempts > 1 else "")
    if state == "sending":
        return "notification being sent"
    tries = f"{attempts} {'try' if attempts == 1 else 'tries'}"
    return (f"notification {'not delivered after' if state == 'failed' else 'retrying after'} {tries}: "
            f"{last_line(error)}")


def _connect(url: str):
    """A DB-API connection and its placeholder, or (None, None) for an embedded database not created yet."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or not os.path.exists(path):
            return None, None
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True), "?"
    import psycopg2

    scheme, rest = url.split("://", 1)
    try:
        return psycopg2.connect(f"{scheme.split('+')[0]}://{rest}", connect_timeout=10), "%s"
    except psycopg2.OperationalError as exc:
        from .config import redact

        reason = (str(exc).strip().splitlines() or ["connection failed"])[0]
        raise UserError(f"database unreachable at {redact(url)}: {reason}") from None


COLUMNS = "id, task, title, notify_state, notify_attempts, notify_error, notified_at"


def read(url: str, submission_id: int | None, limit: int) -> list[SubmissionStatus]:
    """The newest ``limit`` submissions' job counts, or one submission's with its failed and running jobs."""
    conn, ph = _connect(url)
    if conn is None:
        if submission_id:
            raise UserError(f"no submission with id {submission_id}")
        return []
    try:
        cur = conn.cursor()
        try:
            if submission_id:
                cur.execute(f"SELECT {COLUMNS} FROM submissions WHERE id = {ph}", (submission_id,))
            else:
                cur.execute(f"SELECT {COLUMNS} FROM submissions ORDER BY id DESC LIMIT {ph}", (limit,))
        except Exception as exc:       # the tables are missing: psycopg2 and sqlite3 raise different classes
            if "submissions" in str(exc):
                raise UserError("the database has no l335q tables: run `l335q db upgrade` first") from None
            raise
        subs = [SubmissionStatus(*row) for row in cur.fetchall()]
        if submission_id and not subs:
            raise UserError(f"no submission with id {submission_id}")
        for sub in subs:
            cur.execute(f"SELECT state, COUNT(*) FROM jobs WHERE submission_id = {ph} GROUP BY state", (sub.id,))
            sub.counts = dict(cur.fetchall())
            if submission_id:
                sub.lines = _job_lines(cur, ph, sub.id) + ([f"       {sub.notification()}"] if sub.notify_state else [])
        return subs
    finally:
        conn.close()


def _job_lines(cur, ph: str, sub_id: int) -> list[str]:
    """Each failed job's error; each running job's worker, progress and lease age."""
    if ph == "%s":                 # PostgreSQL: the lease's age on the database's clock (l335q.db.db_now)
        cur.execute("SELECT timezone('utc', clock_timestamp())")
        now = cur.fetchone()[0]
    else:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
    cur.execute("SELECT id, state, error, progress, heartbeat_at, worker, lease_s, attempts FROM jobs "
                f"WHERE submission_id = {ph} AND state IN ('failed', 'running') ORDER BY id", (sub_id,))
    lines = []
    for job_id, state, error, progress, heartbeat_at, worker, lease_s, attempts in cur.fetchall():
        if state == "failed":
            lines.append(f"       job {job_id} failed: {last_line(error)}")
            continue
        p = json.loads(progress) if isinstance(progress, str) else (progress or {})
        where = f"{p['unit']} {p['done']} of {p['total']}" + (f" (stage {p['stage'] + 1})" if p.get("stage") else "") \
            if p else "starting"
        if isinstance(heartbeat_at, str):
            heartbeat_at = datetime.fromisoformat(heartbeat_at)
        age = f"{(now - heartbeat_at).total_seconds():.0f} s" if heartbeat_at else "none"
        lines.append(f"       job {job_id} running on {worker}: {where}, lease renewed {age} ago "
                     f"(lease {lease_s or 0:.0f} s), attempt {attempts}")
    return lines
