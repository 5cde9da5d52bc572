"""Unattended nights: a hung job caught by the stall watchdog, time limits, out-of-memory fits split, one clock.

Real `l335q worker` processes on PostgreSQL + Redis (service mode) where a worker's behaviour is the point; the
time limit and the out-of-memory split in embedded mode (the same runner and engine)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from sqlalchemy import func, select, update

from l335q import service
from l335q.checkpoints import Watch
from l335q.db import Checkpoint, Job, session_scope
from l335q.runner import Heartbeat, execute_job
from l335q.submit import create_submission

from job_rows import numbers

# fresh: every test fits (no reuse of an earlier run's rows, l335q.reuse)
FIELD = {"task": "inr-init", "image": "sample:camera", "resolution": 10, "depth": 3, "width": 32,
         "initialiser": "default", "seeds": [0], "seed_group": 1, "device": "cpu", "fresh": True}
QUICK = {"L335Q_LEASE_S": "1.5", "L335Q_REAP_S": "0.5", "L335Q_QUEUED_GRACE_S": "2", "OMP_NUM_THREADS": "1",
         "PYTHONUNBUFFERED": "1"}


def start_worker(env: dict, log, name: str | None = None, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "l335q.cli.main", "worker", "--queues", env["L335Q_TEST_QUEUE"],
                             "--device", "cpu", *(["--name", name] if name else [])], env={**os.environ, **env, **QUICK, **extra},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def detached(model, key):
    """One row read in a session of its own, usable after it closed."""
    with session_scope() as s:
        row = s.get(model, key)
        s.expunge(row)
        return row


def job(job_id: int) -> Job:
    return detached(Job, job_id)


def wait(predicate, timeout: float, what: str, logs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(p.read_text()[-3000:] for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def test_a_hung_job_is_caught_within_the_stall_window_and_finishes_once_elsewhere(service_env, tmp_path):
    """The job hangs at its first progress report (test hook L335Q_TEST_HANG); its heartbeat keeps the lease alive,
    so only the watchdog can free it: the pool process is killed, the job re-queued as a lost attempt with the
    reason and finished by a worker once; both workers' main processes live on."""
    marker = tmp_path / "hang-once"
    marker.touch()
    sub_id, (job_id,) = create_submission({**FIELD, "steps": 400}, queue=service_env["L335Q_TEST_QUEUE"])
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    procs = [start_worker(service_env, open(p, "w"), L335Q_STALL_S="3", L335Q_TEST_HANG=str(marker)) for p in logs]
    try:
        service.dispatch([job_id], service_env["L335Q_TEST_QUEUE"])
        seen = wait(lambda: (job(job_id).error or "").startswith("stalled") and job(job_id).error, 120,
                    "the stall to be recorded", logs)
        final = wait(lambda: job(job_id).state in ("done", "failed") and job(job_id), 120, "the job to end", logs)
        assert all(p.poll() is None for p in procs), "a worker's main process died"
    finally:
        stop(procs)
    assert not marker.exists(), "the job never hung"
    m = re.fullmatch(r"stalled (\d+) s at step 50 of 400 on (\S+) \(attempt 1 of 3\)", seen)
    assert m, seen
    assert 3 <= int(m.group(1)) <= 6, seen                  # window 3 s, beats every 0.5 s
    assert (final.state, final.attempts) == ("done", 2), (final.state, final.attempts, final.error)
    assert [k for k in numbers(job_id) if k[2] == "psnr"] == [(0, None, "psnr")]      # its rows, once
    assert "its job stalled; killing it" in "".join(p.read_text() for p in logs)


def test_a_job_slow_but_advancing_is_not_stopped(service_env, tmp_path):
    """A stall window shorter than the whole job: it reports progress all along, so it runs to the end once."""
    log = tmp_path / "slow.log"
    proc = start_worker(service_env, open(log, "w"), L335Q_STALL_S="2")
    try:
        sub = service.submit({**FIELD, "steps": 8000}, queue=service_env["L335Q_TEST_QUEUE"])
        final = wait(lambda: job(sub.job_ids[0]).state in ("done", "failed") and job(sub.job_ids[0]), 180,
                     "the job to end", [log])
    finally:
        stop([proc])
    assert (final.state, final.attempts, final.error) == ("done", 1, None)
    assert final.seconds > 2.0, final.seconds                # it did outlast the window


def test_a_time_limit_ends_the_job_failed_with_its_reason_and_retry_resumes_it(monkeypatch):
    """`time_limit` (and the worker default L335Q_TIME_LIMIT_S): the job saves its checkpoint and ends failed with
    the reason; `retry` resumes from that checkpoint; without a limit it ends with an unstopped run's numbers."""
    monkeypatch.setenv("L335Q_CHECKPOINT_S", "3600")
    spec = {**FIELD, "steps": 4000}
    _, (plain,) = create_submission(spec)
    assert execute_job(plain) == "done"
    sub_id, (job_id,) = create_submission({**spec, "time_limit": 0.5})
    assert execute_job(job_id) == "failed"
    first = job(job_id)
    m = re.fullmatch(r"time limit 0.5 s exceeded at step ([\d,]+) of 4,000 \(checkpoint kept: `l335q retry` "
                     r"resumes it\)", first.error)
    assert m, first.error
    with session_scope() as s:
        saved = s.scalar(select(func.max(Checkpoint.step)).where(Checkpoint.job_id == job_id))
    assert saved == int(m.group(1).replace(",", "")) and 0 < saved < 4000
    with session_scope() as s:                          # the limit lifted; the worker default takes over
        s.execute(update(Job).where(Job.id == job_id).values(time_limit_s=None))
    monkeypatch.setenv("L335Q_TIME_LIMIT_S", "0.5")
    service.retry(sub_id)
    second = job(job_id)
    assert second.state == "failed", second.error
    later = int(re.search(r"at step ([\d,]+)", second.error).group(1).replace(",", ""))
    assert later > saved, (saved, later)               # resumed: further on than the first run got
    monkeypatch.delenv("L335Q_TIME_LIMIT_S")
    service.retry(sub_id)
    assert job(job_id).state == "done"
    assert numbers(job_id) == numbers(plain)


def test_past_its_time_limit_a_job_that_does_not_stop_is_ended_failed():
    """The heartbeat's verdict on a job whose engine never looks at the stop flag: failed, with the reason."""
    watch = Watch()
    watch.progress = {"stage": 0, "done": 100, "total": 1000, "unit": "step"}
    beat = Heartbeat({1: "token"}, 30.0, watch, None, worker="w1@host")
    assert beat.verdict() == (None, False)
    watch.limit(1.0)
    watch.deadline -= 62                                 # the limit ran out 61 s ago: past the 60 s grace
    reason, final = beat.verdict()
    assert final and reason == ("time limit 1 s exceeded at step 100 of 1,000 on w1@host; it did not stop at a "
                                "checkpoint within 60 s")
    watch.limit(None)
    watch.advanced_at -= 700                             # no sign of life for 700 s (window 600 s)
    assert beat.verdict() == ("stalled 700 s at step 100 of 1,000 on w1@host", False)
    watch.longest_gap = 100.0                            # but its steps take 100 s: 10 x that is the window
    assert beat.verdict() == (None, False)


OOM_RUN = """
import json, re, resource, sys
import torch
torch.set_num_threads(1)
from l335q.db import Job, session_scope
from l335q.runner import execute_job
from l335q.submit import create_submission
spec = json.loads(sys.argv[1])
_, (warm,) = create_submission({**spec, "seeds": [0], "seed_group": 1})
execute_job(warm)                                   # the allocator, kernels and imports warm
vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]) * 2**20, resource.RLIM_INFINITY))
_, (job_id,) = create_submission(spec)
state = execute_job(job_id)
from job_rows import numbers
with session_scope() as s:
    result = s.get(Job, job_id).result
print(json.dumps({"state": state, "result": result, "numbers": [[*k, v] for k, v in numbers(job_id).items()]}))
"""


def test_a_fit_out_of_memory_splits_its_seeds_and_gives_the_same_numbers(tmp_path, one_cpu_thread):
    """32 seeds at once in a process whose address space is capped (RLIMIT_AS: a real allocation failure of the
    CPU allocator): the fit starts again with half the seeds at once until they fit, says so in the job's
    summary, and writes the numbers the uncapped job writes."""
    spec = {**FIELD, "image": "sample:astronaut", "resolution": 48, "width": 64, "depth": 4, "steps": 3,
            "seeds": "0-31", "seed_group": 32}
    _, (plain,) = create_submission(spec)
    assert execute_job(plain) == "done"
    assert job(plain).result["seeds_at_once"] == 32
    # big tensors mmapped (a fixed threshold): freed, they leave the capped address space, as they leave RAM
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "capped"), "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_THRESHOLD_": "131072",
           "PYTHONPATH": os.pathsep.join([str(p) for p in sys.path if p.endswith("bench")] + [os.environ.get(
               "PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", OOM_RUN, json.dumps(spec), "60"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["state"] == "done", out
    splits = out["result"]["out_of_memory"]
    assert splits[0] == "32 seeds at once ran out of memory on cpu: split to 16", splits
    assert out["result"]["seeds_at_once"] == 32 // 2 ** len(splits) < 32
    assert {(s, st, n): v for s, st, n, v in out["numbers"]} == numbers(plain)


def test_skewed_worker_clocks_neither_steal_a_live_job_nor_wait_long_for_a_dead_one(service_env, tmp_path):
    """Leases on the database's clock: a worker whose clock is 10 minutes slow runs a job while a worker 10
    minutes fast reaps every 0.5 s (it does not take the live job); then a worker 10 minutes fast dies holding a
    job, and the job is back with a worker within seconds, not 10 minutes."""
    queue = service_env["L335Q_TEST_QUEUE"]
    logs = [tmp_path / n for n in ("slow.log", "fast.log", "fast2.log")]
    slow = start_worker(service_env, open(logs[0], "w"), L335Q_CLOCK_SKEW_S="-600")
    fast = start_worker(service_env, open(logs[1], "w"), L335Q_CLOCK_SKEW_S="600")
    procs = [slow, fast]
    try:
        sub = service.submit({**FIELD, "steps": 3000, "seeds": [0, 1], "max_attempts": 1}, queue=queue)
        ended = wait(lambda: all(job(i).state in ("done", "failed") for i in sub.job_ids), 240, "both jobs", logs)
        assert ended
        assert [(job(i).state, job(i).attempts, job(i).error) for i in sub.job_ids] == [("done", 1, None)] * 2
        stop(procs)
        doomed = start_worker(service_env, open(logs[2], "w"), L335Q_CLOCK_SKEW_S="600")
        procs = [doomed]
        sub = service.submit({**FIELD, "steps": 20000}, queue=queue)
        wait(lambda: job(sub.job_ids[0]).state == "running", 120, "the job to start", logs)
        os.killpg(doomed.pid, 9)
        killed_at = time.monotonic()
        procs.append(start_worker(service_env, open(logs[0], "w")))
        wait(lambda: (job(sub.job_ids[0]).error or "").startswith("worker"), 60, "the lost job to be re-queued", logs)
        assert time.monotonic() - killed_at < 30
    finally:
        stop(procs)
