"""The fault suite: real worker processes, real Redis and PostgreSQL, faults injected for real.

Each test runs one scenario of bench/faults.py (the benchmark prints the same rows as a table) and asserts:
every job ends done exactly once (no metric row written twice), and the stranded jobs are back in play
within 2 leases (short leases set by env in the scenario: L335Q_LEASE_S=4, reaper every 0.5 s).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import faults  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_cpu_thread", "service_env")]
TWO_LEASES = 2 * faults.LEASE_S


def check_clean(row: faults.Row) -> None:
    assert row.lost == 0, row
    assert row.duplicated == 0, row


def test_whole_worker_killed_at_random_moments(tmp_path):
    row = faults.node_kill(tmp_path, kills=3, seed=0)
    check_clean(row)
    assert row.jobs == 40
    assert row.recover_s <= TWO_LEASES, row


def test_pool_process_killed(tmp_path):
    row = faults.pool_kill(tmp_path)
    check_clean(row)
    assert row.recover_s <= TWO_LEASES, row


def test_broker_flushed_mid_batch(tmp_path):
    row = faults.broker_flush(tmp_path)
    check_clean(row)
    assert not row.note.startswith("0 queued jobs"), row     # the flush did strand jobs
    assert row.recover_s <= TWO_LEASES, row


def test_sigterm_checkpoints_and_the_job_resumes_elsewhere(tmp_path):
    row = faults.sigterm(tmp_path)
    check_clean(row)
    assert row.note == "handed back: True, resumed from checkpoint: True", row


def test_poison_job_fails_after_max_attempts(tmp_path):
    row = faults.poison(tmp_path, attempts=2)
    assert row.lost == 0 and row.duplicated == 0, row     # the other jobs are done, once
    kills = re.match(r"state failed, attempts 2, kills (\d+) \((\d+) in a pack\): worker lost 2 times; last on ",
                     row.note)
    # at least its 2 counted losses alone; a kill may land while its first claim turns into a pack's (then it
    # is not counted, and the pack's claim is killed too): tests/test_packing.py checks what a pack loss counts
    assert kills and int(kills[1]) - int(kills[2]) >= 2, row


def test_a_job_outliving_its_lease_is_not_run_twice(tmp_path):
    """A job that runs for several leases while two workers (and their reapers) are up and its message is
    delivered twice: the live lease keeps it with its first worker."""
    from l335q.worker.app import enqueue

    with faults.Cluster(tmp_path, L335Q_LEASE_S="2") as c:
        c.worker(1)
        c.worker(1)
        ids = c.submit({**faults.LONG_CLS, "epochs": 2})
        enqueue(ids, c.queue)
        jobs = faults.all_final(ids, 300, c)
        seconds = jobs[0].seconds
        logs = c.logs()
    assert (jobs[0].state, jobs[0].attempts) == ("done", 1), logs
    assert seconds > 3 * 2.0, seconds                          # it did outlive its lease several times
    assert "held by" in logs                                   # the duplicate delivery was dropped
    assert faults.duplicated(ids) == 0


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("pg_ctlcluster"), reason="needs root and pg_ctlcluster")
def test_postgresql_restart_mid_batch(tmp_path):
    row = faults.pg_restart(tmp_path)
    check_clean(row)
