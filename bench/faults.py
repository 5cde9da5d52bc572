"""Faults on real processes: what a batch loses when workers, the broker or the database go away.

Each scenario starts real `l335q worker` processes on a queue of its own (PostgreSQL + Redis of this
machine), submits a batch, injects one fault and waits for every job to end. It returns one row:

    fault, runs, jobs, lost (not done), duplicated (metric rows written twice), redone (epochs or steps
    trained again: progress at the fault minus the checkpoint resumed from), recover_s (fault -> the
    stranded jobs are back in play), note

    python bench/faults.py [--runs 2]     # needs L335Q_DATABASE_URL (PostgreSQL) and L335Q_BROKER_URL

tests/test_faults.py runs the same scenarios at the same small sizes and asserts on their rows.
Short leases (L335Q_LEASE_S) make recovery quick; `pg_restart` restarts the machine's PostgreSQL (root).
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import redis
from sqlalchemy import func, select

from l335q import service
from l335q.db import Checkpoint, Job, Metric, session_scope, utcnow

LEASE_S = 4.0
FAST = {"L335Q_LEASE_S": str(LEASE_S), "L335Q_REAP_S": "0.5", "L335Q_QUEUED_GRACE_S": "2",
        "L335Q_CHECKPOINT_S": "0.3", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# 40 small field jobs (about a second each on one CPU thread): 2 initialisers x 20 seeds, one seed per job;
# fresh: every scenario computes its batch (no reuse of an earlier scenario's results, l335q.reuse)
BATCH = {"task": "inr-init", "image": "sample:camera", "resolution": 10, "steps": 400, "depth": 3, "width": 32,
         "initialiser": ["default", "xavier-normal"], "seeds": "0-19", "seed_group": 1, "device": "cpu", "fresh": True}
LONG_CLS = {"task": "cls-compare", "seeds": [0], "epochs": 3, "train_subset": 2000, "test_subset": 500,
            "batch_size": 50, "device": "cpu", "fresh": True}


@dataclass
class Row:
    fault: str
    runs: int
    jobs: int
    lost: int
    duplicated: int
    redone: int
    recover_s: float | None
    note: str = ""


class Cluster:
    """Worker processes on one queue (and optionally a Redis database of their own), logs in ``logdir``."""

    def __init__(self, logdir: Path, redis_db: int | None = None, broker: str | None = None, **env):
        broker = broker or os.environ["L335Q_BROKER_URL"]
        if redis_db is not None:
            broker = broker.rsplit("/", 1)[0] + f"/{redis_db}"
        self.queue = f"l335q-fault-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, **FAST, **env, "L335Q_BROKER_URL": broker}
        self.logdir, self.procs = logdir, []
        logdir.mkdir(parents=True, exist_ok=True)

    def __enter__(self):
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        redis.Redis.from_url(self.env["L335Q_BROKER_URL"]).delete(self.queue)
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def worker(self, concurrency: int = 1) -> subprocess.Popen:
        """A worker named w<N>@<host> (``name_of``) in a process group of its own."""
        n = len(self.procs)
        log = open(self.logdir / f"worker{n}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "l335q.cli.main", "worker", "--queues", self.queue,
                              "--device", "cpu", "--concurrency", str(concurrency), "--name", f"w{n}@%h"],
                             env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        p.name = f"w{n}@"
        self.procs.append(p)
        return p

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.logdir.glob("*.log")))

    def submit(self, spec: dict) -> list[int]:
        return service.submit(spec, queue=self.queue).job_ids


def jobs_of(ids: list[int]) -> list[Job]:
    with session_scope() as s:
        return list(s.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))


def wait_until(predicate, timeout: float, what: str, cluster: Cluster | None = None, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs() if cluster else ''}")


def all_final(ids: list[int], timeout: float, cluster: Cluster) -> list[Job]:
    return wait_until(lambda: (lambda js: js if all(j.state in service.FINAL_STATES for j in js) else None)(jobs_of(ids)),
                      timeout, f"{len(ids)} jobs to be final", cluster, poll=0.5)


def duplicated(ids: list[int]) -> int:
    """Metric rows beyond the first with the same (job, seed, step, name)."""
    with session_scope() as s:
        rows = s.execute(select(func.count() - 1).select_from(Metric).where(Metric.job_id.in_(ids))
                         .group_by(Metric.job_id, Metric.seed, Metric.step, Metric.name)
                         .having(func.count() > 1)).scalars().all()
    return int(sum(rows))


def held(ids: list[int], by: subprocess.Popen | None = None) -> dict[int, tuple[str, int]]:
    """Running jobs (of worker ``by``, default any) -> (claim token, steps redone if lost now: progress minus
    the newest checkpoint's step)."""
    out = {}
    with session_scope() as s:
        for j in s.scalars(select(Job).where(Job.id.in_(ids), Job.state == "running")):
            if by is not None and not (j.worker or "").startswith(by.name):
                continue
            p = j.progress or {"stage": 0, "done": 0}
            saved = s.scalar(select(Checkpoint.step).where(Checkpoint.job_id == j.id, Checkpoint.stage == p["stage"]))
            out[j.id] = (j.claim, max(0, p["done"] - (saved or 0)))
    return out


def recovered(stranded: dict[int, tuple[str, int]]):
    """True once no stranded job is still held under the claim it had at the fault."""
    def check():
        return all(j.claim != stranded[j.id][0] or j.state != "running" for j in jobs_of(list(stranded)))
    return check


def row(fault: str, ids: list[int], jobs: list[Job], redone: int, recover: list[float], note: str = "") -> Row:
    return Row(fault, len(recover) or 1, len(ids), sum(j.state != "done" for j in jobs), duplicated(ids), redone,
               round(max(recover), 2) if recover else None, note)


# ----------------------------------------------------------------------------- scenarios

def node_kill(logdir: Path, kills: int = 2, seed: int = 0) -> Row:
    """SIGKILL of a whole worker (main process and pool) at random moments; a new worker is started each time;
    a second worker stays up (its reaper recovers the jobs). ``max_attempts`` is above the number of kills: once
    packs have run the rest of the batch, the re-queued jobs are all that is left, and one of them killed at every
    kill would end failed by design (the cap is the poison scenario's)."""
    rng = random.Random(seed)
    with Cluster(logdir) as c:
        c.worker(1)
        victim = c.worker(2)
        ids = c.submit({**BATCH, "max_attempts": kills + 1})
        redone, recover = 0, []
        for _ in range(kills):
            wait_until(lambda: held(ids, victim), 120, "a job running on the victim", c)
            time.sleep(rng.uniform(0.2, 1.5))
            stranded = held(ids, victim)
            os.killpg(victim.pid, signal.SIGKILL)
            t = time.monotonic()
            victim.wait()
            stranded = {k: v for k, v in stranded.items() if k in held(ids)}   # not finished just before
            victim = c.worker(2)
            wait_until(recovered(stranded), 10 * LEASE_S, "the killed worker's jobs to be re-queued", c, poll=0.05)
            recover.append(time.monotonic() - t)
            redone += sum(v[1] for v in stranded.values())
        jobs = all_final(ids, 300, c)
    return row("whole worker SIGKILL", ids, jobs, redone, recover, f"{kills} kills, lease {LEASE_S:g} s")


def pool_kill(logdir: Path) -> Row:
    """SIGKILL of the pool process running a job; the worker itself lives on and its reaper recovers the job."""
    with Cluster(logdir) as c:
        proc = c.worker(1)
        ids = c.submit({**BATCH, "seeds": "0-5"})
        wait_until(lambda: held(ids), 120, "a running job", c)
        time.sleep(0.3)
        stranded = held(ids)
        child = [int(x) for x in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        os.kill(child[0], signal.SIGKILL)
        t = time.monotonic()
        wait_until(recovered(stranded), 10 * LEASE_S, "the job to be re-queued", c, poll=0.05)
        recover = time.monotonic() - t
        jobs = all_final(ids, 300, c)
    return row("pool process SIGKILL", ids, jobs, sum(v[1] for v in stranded.values()), [recover])


def broker_flush(logdir: Path, redis_db: int = 12) -> Row:
    """FLUSHDB of the broker's Redis database mid-batch: every queued message is gone."""
    with Cluster(logdir, redis_db=redis_db) as c:
        c.worker(1)
        ids = c.submit(BATCH)
        wait_until(lambda: sum(j.state == "done" for j in jobs_of(ids)) >= 3, 120, "three jobs done", c)
        redis.Redis.from_url(c.env["L335Q_BROKER_URL"]).flushdb()
        t, flushed = time.monotonic(), utcnow()
        stranded = [j.id for j in jobs_of(ids) if j.state == "queued"]
        wait_until(lambda: all(j.state != "queued" or (j.queued_at and j.queued_at >= flushed)
                               for j in jobs_of(stranded)), 60, "stranded jobs re-published", c)
        recover = time.monotonic() - t
        jobs = all_final(ids, 300, c)
    return row("broker FLUSHDB", ids, jobs, 0, [recover], f"{len(stranded)} queued jobs had no message")


def pg_restart(logdir: Path) -> Row:
    """PostgreSQL restarted mid-batch (pg_ctlcluster, as root): workers reconnect and carry on."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    with Cluster(logdir) as c:
        c.worker(2)
        ids = c.submit(BATCH)
        wait_until(lambda: sum(j.state == "done" for j in jobs_of(ids)) >= 3 and held(ids), 120, "a job running", c)
        stranded, t = held(ids), time.monotonic()
        done_before = sum(j.state == "done" for j in jobs_of(ids))     # counted before: packs may end the batch
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True,
                       capture_output=True)                             # while the server restarts
        wait_until(lambda: sum(j.state == "done" for j in jobs_of(ids)) > done_before, 120, "a job done after", c)
        recover = time.monotonic() - t
        jobs = all_final(ids, 300, c)
    return row("PostgreSQL restart", ids, jobs, sum(v[1] for v in stranded.values()), [recover])


def sigterm(logdir: Path) -> Row:
    """SIGTERM (warm shutdown) of the worker running a long job: it checkpoints and hands the job back; a
    worker started afterwards resumes it from the checkpoint."""
    with Cluster(logdir, L335Q_CHECKPOINT_S="3600") as c:
        first = c.worker(1)
        ids = c.submit(LONG_CLS)
        wait_until(lambda: (held(ids).get(ids[0]) and (jobs_of(ids)[0].progress or {}).get("stage", 0) >= 1),
                   240, "the CNN to be training", c)
        first.send_signal(signal.SIGTERM)
        t = time.monotonic()
        first.wait(timeout=120)
        handed_back = jobs_of(ids)[0].state == "queued"
        c.worker(1)
        wait_until(lambda: jobs_of(ids)[0].state != "queued", 120, "the job to be taken again", c)
        recover = time.monotonic() - t
        jobs = all_final(ids, 300, c)
        resumed = "resuming from its checkpoint" in c.logs()
    return row("worker SIGTERM", ids, jobs, 0, [recover],
               f"handed back: {handed_back}, resumed from checkpoint: {resumed}")


def poison(logdir: Path, attempts: int = 2) -> Row:
    """A job that kills its own process at every attempt (its pool process is SIGKILLed each time it runs it):
    after ``max_attempts`` losses it ends failed with the reason; the other jobs are unharmed. A loss while the
    job ran in a pack is not counted (``runner.worker_lost``): such kills are counted apart."""
    from l335q.runner import PACKED

    with Cluster(logdir) as c:
        proc = c.worker(1)
        ids = c.submit({**BATCH, "seeds": "0-2", "max_attempts": attempts})
        target, killed = ids[0], []          # the claim tokens the target was killed under
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and jobs_of([target])[0].state not in service.FINAL_STATES:
            j = jobs_of([target])[0]
            if j.state == "running" and j.claim and j.claim not in killed:
                for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
                killed.append(j.claim)
            time.sleep(0.05)
        jobs = all_final(ids, 300, c)
    error, packed = jobs[0].error or "", sum(t.startswith(PACKED) for t in killed)
    return Row("poison job", 1, len(ids), sum(j.state != "done" for j in jobs[1:]), duplicated(ids), 0, None,
               f"state {jobs[0].state}, attempts {jobs[0].attempts}, kills {len(killed)} ({packed} in a pack): {error}")


SCENARIOS = {"node_kill": node_kill, "pool_kill": pool_kill, "broker_flush": broker_flush, "sigterm": sigterm,
             "poison": poison, "pg_restart": pg_restart}


def main() -> None:
    from l335q.config import pack_max
    from l335q.results import Table, render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="repetitions of the whole-worker kill (each 2 kills)")
    ap.add_argument("--out", default="/tmp/l335q-faults")
    ap.add_argument("--only", nargs="*", choices=list(SCENARIOS))
    args = ap.parse_args()
    rows = []
    for name in args.only or SCENARIOS:
        runs = args.runs if name == "node_kill" else 1
        for i in range(runs):
            kwargs = {"seed": i} if name == "node_kill" else {}
            rows.append(SCENARIOS[name](Path(args.out) / f"{name}{i}", **kwargs))
            print(rows[-1], file=sys.stderr, flush=True)
    table = Table(task="faults", columns=list(asdict(rows[0])), rows=[asdict(r) for r in rows],
                  notes=[f"lease {LEASE_S:g} s, reaper every 0.5 s, queued grace 2 s, one torch thread per process, "
                         f"packs of up to {pack_max()} jobs (L335Q_PACK_MAX)"])
    print(render(table))


if __name__ == "__main__":
    main()
