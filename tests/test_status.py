"""`l335q status` reads with the database driver alone (l335q.status): the same counts and job lines from
SQLite (embedded) and PostgreSQL, written through the ORM as the runner writes them."""
from __future__ import annotations

from datetime import timedelta

import pytest

from l335q import UserError
from l335q.db import Job, Submission, ensure_schema, session_scope, utcnow
from l335q.status import read


def fill(url: str) -> int:
    """A submission with one done, one failed and one running job (its progress and heartbeat set)."""
    ensure_schema(url)
    with session_scope(url) as s:
        sub = Submission(task="inr-init", title="status test", spec={})
        s.add(sub)
        s.flush()
        s.add_all([
            Job(submission_id=sub.id, task="inr-init", params={}, state="done"),
            Job(submission_id=sub.id, task="inr-init", params={}, state="failed",
                error="Traceback (most recent call last):\n  ...\nValueError: the image is empty"),
            Job(submission_id=sub.id, task="inr-init", params={}, state="running", worker="w1@host", attempts=2,
                lease_s=30.0, heartbeat_at=utcnow() - timedelta(seconds=7),
                progress={"done": 3, "total": 10, "unit": "step", "stage": 1}),
        ])
        return sub.id


def check(url: str) -> None:
    sub_id = fill(url)
    [sub] = read(url, sub_id, 10)
    assert sub.counts == {"done": 1, "failed": 1, "running": 1}
    assert sub.line().startswith(f"{sub_id:>5}  inr-init        3 jobs: 1 done, 1 failed, 1 running  status test")
    failed, running = sub.lines
    assert failed.endswith("failed: ValueError: the image is empty")
    assert "running on w1@host: step 3 of 10 (stage 2), lease renewed " in running
    age = int(running.split("lease renewed ")[1].split(" s ago")[0])
    assert 6 <= age <= 60 and running.endswith("(lease 30 s), attempt 2")
    assert sub_id in [s.id for s in read(url, None, 5)]
    with pytest.raises(UserError, match="no submission with id"):
        read(url, sub_id + 1000, 10)


def test_status_reads_sqlite(tmp_path):
    check(f"sqlite:///{tmp_path / 'status.db'}")


def test_status_reads_postgresql(migrated_pg):
    check(migrated_pg)


def test_status_of_an_embedded_database_not_created_yet_is_empty(tmp_path):
    assert read(f"sqlite:///{tmp_path / 'none.db'}", None, 10) == []
