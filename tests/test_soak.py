"""A short soak (bench/soak.py): 90 s of waves of short jobs on two workers with a fault every 8 s, each of the
five kinds at least once (a worker SIGKILLed, a pool process SIGKILLed, a job hung, the broker restarted,
PostgreSQL restarted). Asserts what the 30-minute soak in bench/RESULTS.md reports: every job done, none lost,
none written twice, every hang caught by the stall watchdog, every fault recovered from within a minute."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import soak  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_cpu_thread"),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("redis-server")
                                 or not (soak.PG_BIN / "pg_ctl").exists(),
                                 reason="needs root, redis-server and PostgreSQL's pg_ctl")]


def test_a_short_soak_with_every_fault_loses_nothing():
    # (its own folder under /tmp: PostgreSQL runs as the postgres user, who cannot enter pytest's tmp_path)
    row = soak.run(minutes=1.5, fault_every=8, workers=2, jobs=200, steps=200)
    assert all(row[kind] >= 1 for kind in soak.KINDS), row
    assert row["jobs"] >= 200 and row["done"] == row["jobs"], row
    assert row["lost"] == 0 and row["duplicated"] == 0, row
    assert row["stalls_caught"] >= row["hangs"] >= 1, row
    assert row["longest_recovery_s"] is not None and row["longest_recovery_s"] < 60, row
