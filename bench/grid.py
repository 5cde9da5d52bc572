"""A 10,000-job grid on PostgreSQL: seconds to submit it, to show its status and to build its results table.

Makes a fresh PostgreSQL database (dropped at the end), migrates it, and submits an ``inr-init`` spec with
``seeds: "0-9999"``, ``seed_group: 1`` (10,000 jobs). Timed, median of --repeat runs:
  submit (core)     ``submit.create_submission``: the submission and all its jobs in one transaction
  enqueue           one Celery message per job onto a throwaway Redis queue (deleted afterwards)
  submit (CLI)      ``l335q submit`` in a fresh process, service mode, start-up and imports included
  reap              one pass of ``service.reap`` with the 10,000 jobs queued past the grace period and their
                    messages in the broker (what every worker runs every ``L335Q_REAP_S`` while a grid waits)
  status / results  ``l335q status ID`` and ``l335q results --task inr-init --submission ID --format json``,
                    in this process (click's runner, imports warm) and as a fresh process
Before status and results are timed, every job is marked done and given the metric rows a finished
``inr-init`` job of the practical's size writes (``psnr`` + the ``loss`` curve at the engine's 51 sampled
steps), with values drawn from a seeded RNG: no job is trained. The reference columns time the same work
the way it was done before (ORM ``Job`` objects added one by one; ``selectinload`` of each job's metrics;
``apply_async`` per message). Also printed: the Redis memory the queued messages take, the PostgreSQL database
and ``jobs`` table sizes, and the machine's load before and after (these are shared machines).
Usage: python bench/grid.py [--jobs 10000] [--repeat 3] [--form seeds|initialisers] [--skip-reference]
       [--pg postgresql://postgres@127.0.0.1:5432] [--redis redis://127.0.0.1:6379/0] [--out results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg2
import yaml
from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import selectinload

from l335q.db import Job, Metric, get_engine, session_scope, upgrade
from l335q.fields.engine import FieldConfig
from l335q.specs import expand
from l335q.submit import create_submission


def spec(jobs: int, form: str = "seeds") -> dict:
    """``seeds``: one initialiser, ``jobs`` seeds (this bench's own); ``initialisers``: the spec of issue 24 (two
    initialisers × jobs/2 seeds at resolution 16, 10 steps, as a new user tried it)."""
    if form == "initialisers":
        return {"task": "inr-init", "title": f"grid bench ({jobs} jobs, 2 initialisers)",
                "initialiser": ["default", "xavier-uniform"], "seeds": f"0-{jobs // 2 - 1}", "seed_group": 1,
                "resolution": 16, "steps": 10}
    return {"task": "inr-init", "title": f"grid bench ({jobs} jobs)", "image": "sample:astronaut",
            "initialiser": "default", "seeds": f"0-{jobs - 1}", "seed_group": 1, "device": "cpu"}


def reference_enqueue(job_ids: list[int], queue: str) -> None:
    """The previous ``enqueue``: Celery's ``apply_async`` per job id (in a kombu publish batch)."""
    from l335q.worker.app import app, run_job

    with app.producer_or_acquire() as producer:
        producer.maybe_declare(app.amqp.queues[queue])
        with producer.batch():
            for job_id in job_ids:
                run_job.apply_async(args=[job_id], queue=queue, producer=producer, declare=[])


def machine_state() -> dict:
    """How busy the machine was (these are shared machines): its load averages."""
    return {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_time(fn, repeat: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(repeat))


def reference_submit(raw: dict, url: str) -> None:
    """The previous ``create_submission``: one ORM ``Job`` object per job, added and flushed."""
    from l335q.db import Submission

    exp = expand(raw)
    with session_scope(url) as s:
        sub = Submission(task=exp.task, title=exp.title, spec=exp.spec)
        s.add(sub)
        s.flush()
        s.add_all([Job(submission_id=sub.id, task=exp.task, params=p) for p in exp.jobs])
        s.flush()


def reference_load(sub_id: int, url: str) -> int:
    """The previous ``results.load``: ORM jobs with ``selectinload(Job.metrics)``."""
    with session_scope(url) as s:
        jobs = s.scalars(select(Job).where(Job.submission_id == sub_id).options(selectinload(Job.metrics))
                         .order_by(Job.id)).all()
        return sum(len(j.metrics) for j in jobs)


def finish_jobs(sub_id: int, url: str, steps: int = FieldConfig.steps) -> int:
    """Mark every job done with the metric rows a finished inr-init job writes (synthetic values)."""
    sampled = sorted(set(range(0, steps, max(1, steps // 50))) | {steps - 1})
    rng = np.random.default_rng(0)
    with session_scope(url) as s:
        jobs = s.execute(select(Job.id, Job.params).where(Job.submission_id == sub_id)).all()
        rows = []
        for job_id, params in jobs:
            seed = params["seeds"][0]
            rows.append({"job_id": job_id, "seed": seed, "step": None, "name": "psnr", "value": float(rng.normal(18, 3))})
            losses = np.exp(-np.linspace(0, 5, len(sampled))) * rng.uniform(0.01, 0.1)
            rows += [{"job_id": job_id, "seed": seed, "step": st, "name": "loss", "value": float(v)}
                     for st, v in zip(sampled, losses)]
        s.execute(insert(Metric.__table__), rows)
        s.execute(update(Job).where(Job.submission_id == sub_id).values(state="done", seconds=1.0))
        s.execute(text("ANALYZE"))
    return len(rows)


def cli(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "l335q.cli.main", *args], env={**os.environ, **env},
                          capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"l335q {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return dt, proc


def in_process(args: list[str]) -> None:
    from click.testing import CliRunner

    from l335q.cli.main import cli as group

    res = CliRunner().invoke(group, args, catch_exceptions=False)
    if res.exit_code != 0:
        raise SystemExit(f"l335q {' '.join(args)} exited {res.exit_code}: {res.output.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out", default=None)
    ap.add_argument("--form", choices=["seeds", "initialisers"], default="seeds",
                    help="the grid's spec: see spec() (initialisers: issue 24's)")
    ap.add_argument("--skip-reference", action="store_true", help="leave out the ORM references (100,000 jobs)")
    a = ap.parse_args()
    name = f"l335q_grid_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{a.pg}/postgres")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = f"{a.pg}/{name}"
    queue = f"l335q-grid-bench-{uuid.uuid4().hex[:8]}"
    env = {"L335Q_DATABASE_URL": url, "L335Q_BROKER_URL": a.redis}
    os.environ.update(env)
    raw = spec(a.jobs, a.form)
    out: dict = {"jobs": a.jobs, "form": a.form, "repeat": a.repeat, "machine": os.uname().nodename,
                 "cpus": os.cpu_count(), "before": machine_state()}
    try:
        upgrade(url)
        create_submission(spec(10), url=url)        # warm-up: connection pool, imports, sample check
        reference_submit(spec(10), url)
        out["submit_core_s"] = median_time(lambda: create_submission(raw, url=url), a.repeat)
        if not a.skip_reference:
            out["submit_reference_orm_s"] = median_time(lambda: reference_submit(raw, url), a.repeat)
        from l335q.worker.app import app, enqueue

        sub_id, job_ids = create_submission(raw, url=url, queue=queue)
        enqueue(job_ids[:10], queue)                # warm-up: broker connection
        redis = app.connection_for_write().default_channel.client
        redis.delete(queue)
        out["enqueue_reference_apply_async_s"], _ = timed(lambda: reference_enqueue(job_ids, queue))
        redis.delete(queue)
        used = redis.info("memory")["used_memory"]
        out["enqueue_s"], _ = timed(lambda: enqueue(job_ids, queue))
        out["enqueue_ratio_vs_reference"] = out["enqueue_reference_apply_async_s"] / out["enqueue_s"]
        out["redis_queue_mib"] = (redis.info("memory")["used_memory"] - used) / 2**20
        with psycopg2.connect(url) as conn, conn.cursor() as cur:
            cur.execute("SELECT pg_database_size(current_database()), pg_total_relation_size('jobs')")
            db_bytes, jobs_bytes = cur.fetchone()
        out["postgres_database_mib"], out["postgres_jobs_table_mib"] = db_bytes / 2**20, jobs_bytes / 2**20
        from l335q.service import reap

        with session_scope(url) as s:               # everything else out of the way: only this grid is queued
            s.execute(update(Job).where(Job.submission_id != sub_id).values(state="cancelled"))
        out["reap_s"], reaped = timed(lambda: reap(url, grace_s=0.0))
        assert not reaped.republished, "every message is in the broker: nothing to re-publish"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "grid.yaml"
            path.write_text(yaml.safe_dump(raw))
            out["submit_cli_s"], proc = cli(["submit", str(path), "--queue", queue], env)
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(queue)
        out["metric_rows"] = finish_jobs(sub_id, url, raw.get("steps", FieldConfig.steps))
        status_args = ["status", str(sub_id)]
        results_args = ["results", "--task", "inr-init", "--submission", str(sub_id), "--format", "json"]
        in_process(status_args)                     # warm-up: imports, connection pool
        in_process(results_args)
        out["status_in_process_s"] = median_time(lambda: in_process(status_args), a.repeat)
        out["results_in_process_s"] = median_time(lambda: in_process(results_args), a.repeat)
        if not a.skip_reference:
            out["results_reference_load_s"] = median_time(lambda: reference_load(sub_id, url), a.repeat)
        out["status_cli_s"] = statistics.median(cli(status_args, env)[0] for _ in range(a.repeat))
        out["results_cli_s"] = statistics.median(cli(results_args, env)[0] for _ in range(a.repeat))
        rows = json.loads(cli(results_args, env)[1].stdout)["rows"]
        out["results_seeds"] = sum(r["seeds"] for r in rows)
        out["after"] = machine_state()
    finally:
        get_engine.cache_clear()
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
