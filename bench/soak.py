"""Soak: a night of short jobs with a random fault every minute; prints what was lost, duplicated and caught.

A PostgreSQL and a Redis of the soak's own (started here in a temporary folder, so restarting them disturbs
nothing else on the machine), 2-3 `l335q worker` processes (packing at its default), waves of short inr-init
jobs (a new wave whenever the last one nears its end), and every ``--fault-every`` seconds one fault, in
shuffled rounds of all five: a whole worker SIGKILLed (a new one started), a pool process SIGKILLed, a job made
to hang (the L335Q_TEST_HANG hook: caught by the stall watchdog), the broker restarted (its queue lost) and
PostgreSQL restarted. After ``--minutes`` no more faults or waves; it waits (at most ``--drain``) for every job
to end and stops by itself.

    python bench/soak.py --minutes 30 --fault-every 60 --workers 3 --jobs 1000

Row: faults injected by kind, jobs, done, lost (not done), duplicated (metric rows written twice), hangs
injected and stalls caught, and the longest time any fault took to recover from (its stranded jobs back in
play: re-queued, re-published, or a job done after the restart).
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults  # noqa: E402
from faults import Cluster, held, jobs_of, recovered, wait_until  # noqa: E402

from l335q.db import FINAL_STATES, Job, session_scope, upgrade, utcnow  # noqa: E402

KINDS = ("node_kill", "pool_kill", "hang", "broker_restart", "pg_restart")
PG_BIN = Path("/usr/lib/postgresql") / (sorted(os.listdir("/usr/lib/postgresql"))[-1] if Path(
    "/usr/lib/postgresql").is_dir() else "") / "bin"


def as_postgres(*cmd) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *map(str, cmd)] if os.geteuid() == 0 else list(map(str, cmd))


class Services:
    """A PostgreSQL (port ``pg_port``) and a Redis (``redis_port``) of this soak's own, in ``root``."""

    def __init__(self, root: Path, pg_port: int = 55433, redis_port: int = 56380):
        self.root, self.pg_port, self.redis_port = root, pg_port, redis_port
        self.pg_dir, self.redis_proc = root / "pg", None
        self.db_url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        self.broker_url = f"redis://127.0.0.1:{redis_port}/0"

    def pg_ctl(self, *args):
        subprocess.run(as_postgres(PG_BIN / "pg_ctl", "-D", self.pg_dir, "-l", self.root / "pg.log", "-w", *args),
                       check=True, capture_output=True)

    def start(self):
        self.pg_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            shutil.chown(self.pg_dir, "postgres")
        subprocess.run(as_postgres(PG_BIN / "initdb", "-D", self.pg_dir, "-A", "trust", "-U", "postgres"),
                       check=True, capture_output=True)
        self.pg_ctl("-o", f"-p {self.pg_port} -k {self.pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c max_connections=200", "start")
        self.start_redis()
        upgrade(self.db_url)
        return self

    def start_redis(self):
        self.redis_proc = subprocess.Popen(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                            "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(self.redis_port), "ping"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", 20, "redis to start")

    def restart_redis(self):
        self.redis_proc.kill()
        self.redis_proc.wait()
        self.start_redis()

    def stop(self):
        if self.redis_proc:
            self.redis_proc.kill()
        try:
            self.pg_ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass


def wave(first_seed: int, jobs: int, steps: int) -> dict:
    """``jobs`` one-seed inr-init jobs (two initialisers), seeds from ``first_seed``."""
    half = max(1, jobs // 2)
    return {"task": "inr-init", "image": "sample:camera", "resolution": 10, "steps": steps, "depth": 3, "width": 32,
            "initialiser": ["default", "xavier-normal"], "seeds": f"{first_seed}-{first_seed + half - 1}",
            "seed_group": 1, "device": "cpu", "max_attempts": 50}


def unfinished(ids: list[int]) -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Job).where(Job.id.in_(ids),
                                                                     Job.state.not_in(FINAL_STATES)))


def stalls(logdir: Path) -> int:
    return sum(p.read_text(errors="replace").count("its job stalled; killing it") for p in logdir.glob("*.log"))


def snapshot(ids: list[int], procs: list[subprocess.Popen], svc: Services, queue: str) -> str:
    """One line of what the cluster is doing: jobs by state, messages waiting / unacknowledged, pool processes."""
    import redis

    with session_scope() as s:
        states = dict(s.execute(select(Job.state, func.count()).where(Job.id.in_(ids)).group_by(Job.state)).all())
    r = redis.Redis.from_url(svc.broker_url)
    unacked = sum(queue.encode() in m for m in r.hvals("unacked"))
    pools = []
    for p in procs:
        kids = Path(f"/proc/{p.pid}/task/{p.pid}/children")
        pools.append("dead" if p.poll() is not None else str(len(kids.read_text().split())) if kids.exists() else "?")
    return (f"jobs {dict(sorted(states.items()))}, queue {r.llen(queue)} waiting / {unacked} unacked, "
            f"pool processes per worker {pools}")


def run(minutes: float, fault_every: float, workers: int = 3, jobs: int = 1000, steps: int = 300,
        stall_s: float = 10.0, drain_s: float = 600.0, seed: int = 0, root: Path | None = None) -> dict:
    rng = random.Random(seed)
    own_root, root = root is None, Path(root or tempfile.mkdtemp(prefix="l335q-soak-"))
    marker = root / "hang"
    svc = Services(root)
    env = {"L335Q_DATABASE_URL": svc.db_url, "L335Q_STALL_S": str(stall_s), "L335Q_TEST_HANG": str(marker)}
    injected = {k: 0 for k in KINDS}
    recover, hangs, ids = [], 0, []
    try:
        svc.start()
        with Cluster(root / "logs", broker=svc.broker_url, **env) as c:
            procs = [c.worker(1) for _ in range(workers)]
            ids += c.submit(wave(0, jobs, steps))

            looked = [0.0]

            def top_up() -> None:
                """A new wave when the last one nears its end (looked at once a second, also while waiting for a
                recovery: 3 workers finish 1,000 small packed jobs in well under a minute)."""
                if time.monotonic() - looked[0] >= 1.0:
                    looked[0] = time.monotonic()
                    if unfinished(ids) < max(workers * 16, jobs // 2):
                        ids.extend(c.submit(wave(len(ids), jobs, steps)))

            def wait_until(predicate, timeout, what, cluster, poll=0.1):
                return faults.wait_until(lambda: (top_up(), predicate())[1], timeout, what, cluster, poll)
            start = time.monotonic()
            next_fault, order = start + fault_every, []
            while time.monotonic() - start < minutes * 60:
                time.sleep(0.5)
                top_up()
                if time.monotonic() < next_fault:
                    continue
                order = order or rng.sample(KINDS, len(KINDS))
                kind = order.pop()
                injected[kind] += 1
                t, done_before = time.monotonic(), sum(j.state == "done" for j in jobs_of(ids))
                if kind in ("node_kill", "pool_kill"):
                    victim = rng.choice([p for p in procs if held(ids, p)] or procs)
                    stranded = held(ids, victim)
                    if kind == "node_kill":
                        os.killpg(victim.pid, signal.SIGKILL)
                        victim.wait()
                        procs[procs.index(victim)] = c.worker(1)
                    else:
                        for pid in Path(f"/proc/{victim.pid}/task/{victim.pid}/children").read_text().split():
                            os.kill(int(pid), signal.SIGKILL)
                    stranded = {k: v for k, v in stranded.items() if k in held(ids)}
                    wait_until(recovered(stranded), 120, f"{kind}: stranded jobs back in play", c, poll=0.2)
                elif kind == "hang":
                    caught = stalls(c.logdir)
                    marker.touch()
                    try:
                        wait_until(lambda: not marker.exists(), 120, "a job to hang", c, poll=0.2)
                    except TimeoutError as exc:
                        raise TimeoutError(f"{exc}\n{snapshot(ids, procs, svc, c.queue)}") from None
                    t, hangs = time.monotonic(), hangs + 1
                    wait_until(lambda: stalls(c.logdir) > caught, 10 * stall_s + 120, "the stall caught", c)
                else:
                    stranded = {j.id for j in jobs_of(ids) if j.state == "queued"}
                    since = utcnow()
                    if kind == "broker_restart":
                        svc.restart_redis()
                        wait_until(lambda: all(j.state != "queued" or (j.queued_at and j.queued_at >= since)
                                               for j in jobs_of(list(stranded))), 120, "queued jobs re-published", c)
                    else:
                        svc.pg_ctl("-m", "fast", "restart")
                    wait_until(lambda: sum(j.state == "done" for j in jobs_of(ids)) > done_before, 180,
                               f"{kind}: a job done after it", c, poll=0.5)
                recover.append((time.monotonic() - t, kind))
                print(f"{time.monotonic() - start:7.0f} s  {kind:<15} recovered in {recover[-1][0]:.1f} s; "
                      f"{snapshot(ids, procs, svc, c.queue)}", file=sys.stderr, flush=True)
                next_fault = time.monotonic() + fault_every
            final = faults.all_final(ids, drain_s, c)
            caught = stalls(c.logdir)
    finally:
        svc.stop()
    if own_root:                       # a soak that raised keeps its folder (logs, pg.log) for a look
        shutil.rmtree(root, ignore_errors=True)
    longest = max(recover, default=(None, ""))
    return {"minutes": round(minutes, 1), "workers": workers, "faults": sum(injected.values()), **injected,
            "jobs": len(ids), "done": sum(j.state == "done" for j in final),
            "lost": sum(j.state != "done" for j in final), "duplicated": faults.duplicated(ids), "hangs": hangs,
            "stalls_caught": caught, "longest_recovery_s": None if longest[0] is None else round(longest[0], 1),
            "longest_after": longest[1]}


def main() -> None:
    from l335q.results import Table, render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--fault-every", type=float, default=60, help="seconds between faults")
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=1000, help="jobs per wave")
    ap.add_argument("--steps", type=int, default=300, help="steps per job")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    row = run(args.minutes, args.fault_every, args.workers, args.jobs, args.steps, seed=args.seed)
    print(render(Table(task="soak", columns=list(row), rows=[row], notes=[
        f"{os.cpu_count()} CPUs, lease {faults.LEASE_S:g} s, stall window 10 s, reaper every 0.5 s, packing at its "
        "default, one torch thread per process"])))


if __name__ == "__main__":
    main()
