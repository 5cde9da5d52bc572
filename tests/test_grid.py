"""Grids of 10,000 jobs: one bulk insert in one transaction, and results read without a query per job."""
from __future__ import annotations

import pytest
from PIL import Image
from sqlalchemy import func, insert, select, text

from l335q.db import Artifact, Job, Metric, Submission, get_engine, session_scope, upgrade
from l335q.results import load
from l335q.specs import expand
from l335q.submit import create_submission
from l335q.tasks import get_kind

from conftest import fresh_pg_database

JOBS = 10_000
FAIL_AT_SEED = 5_000
REFUSE_ONE_SEED = f"""
CREATE FUNCTION refuse_seed() RETURNS trigger AS $$
BEGIN
  IF (NEW.params -> 'seeds' ->> 0)::int = {FAIL_AT_SEED} THEN
    RAISE EXCEPTION 'job with seed {FAIL_AT_SEED} refused by the test trigger';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_seed BEFORE INSERT ON jobs FOR EACH ROW EXECUTE FUNCTION refuse_seed();
"""


def grid_spec(image: str, jobs: int = JOBS) -> dict:
    return {"task": "inr-init", "image": image, "initialiser": "default", "seeds": f"0-{jobs - 1}", "seed_group": 1,
            "max_attempts": 2, "device": "cpu",
            "fresh": True}


def counts(url: str) -> tuple[int, int, int]:
    with session_scope(url) as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Submission, Job, Artifact))


def test_a_10000_job_submission_is_one_transaction(tmp_path):
    """A database error at job 5,001 of 10,000 leaves nothing behind: no submission, no job, no stored input."""
    image = tmp_path / "dusk.png"
    Image.new("RGB", (16, 16), (200, 90, 40)).save(image)
    raw = grid_spec(image.name)
    with fresh_pg_database("l335q_grid") as url:
        upgrade(url)
        with get_engine(url).begin() as conn:
            conn.execute(text(REFUSE_ONE_SEED))
        with pytest.raises(Exception, match=f"seed {FAIL_AT_SEED} refused"):
            create_submission(raw, tmp_path, url=url)
        assert counts(url) == (0, 0, 0)
        with get_engine(url).begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_seed ON jobs"))
        sub_id, job_ids = create_submission(raw, tmp_path, url=url)
        # the id sequence is not rolled back: the failed attempt really inserted its first 5,000 jobs
        assert job_ids[0] > FAIL_AT_SEED
        assert job_ids == sorted(job_ids) and len(job_ids) == JOBS
        assert counts(url) == (1, JOBS, 1)
        with session_scope(url) as s:
            rows = s.execute(select(Job.id, Job.params, Job.state, Job.attempts, Job.max_attempts, Job.submission_id)
                             .order_by(Job.id)).all()
        ref = rows[0].params["image"]
        expected = [{**p, "image": ref} for p in expand(raw, tmp_path).jobs]
        assert ref.startswith("upload:")
        assert [r.id for r in rows] == job_ids
        assert [r.params for r in rows] == expected
        assert {(r.state, r.attempts, r.max_attempts, r.submission_id) for r in rows} == {("queued", 0, 2, sub_id)}


def test_bulk_insert_on_sqlite_keeps_job_order(tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    raw = grid_spec("sample:camera", 2_000)
    sub_id, job_ids = create_submission(raw, url=url)
    with session_scope(url) as s:
        rows = s.execute(select(Job.id, Job.params).where(Job.submission_id == sub_id).order_by(Job.id)).all()
    assert [r.id for r in rows] == job_ids
    assert [r.params for r in rows] == expand(raw).jobs


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_results_read_each_metric_name_once_for_all_jobs(backend, request, tmp_path):
    """``load`` + a kind's table: one SELECT for the jobs and one per metric name the table reads, whatever the
    number of jobs; the values are the ones written (including the last of two values at the same step)."""
    url = f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite" else request.getfixturevalue("migrated_pg")
    upgrade(url)
    sub_id, job_ids = create_submission(grid_spec("sample:camera", 300), url=url)
    psnr = {seed: 10.0 + seed / 10 for seed in range(300)}
    with session_scope(url) as s:
        s.execute(insert(Metric.__table__), [
            {"job_id": j, "seed": seed, "step": step, "name": name, "value": value}
            for j, seed in zip(job_ids, range(300))
            for step, name, value in ((None, "psnr", psnr[seed]), (0, "loss", 0.5), (19, "loss", 0.1))])
        s.execute(Job.__table__.update().where(Job.submission_id == sub_id).values(state="done"))
    statements = []
    engine = get_engine(url)

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    from sqlalchemy import event
    event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(url) as s:
            data = load(s, sub_id, None)
            table = get_kind("inr-init").results(data)
            curves = [j.curve("loss") for j in data.jobs]
    finally:
        event.remove(engine, "before_cursor_execute", count)
    metric_selects = [q for q in statements if "FROM metrics" in q]
    assert len(metric_selects) == 2, metric_selects           # psnr for the table, loss for the curves
    assert len(statements) <= 6, statements                   # + the submission, the jobs (and ensure_schema)
    row = table.rows[0]
    assert (row["seeds"], row["psnr_min"], row["psnr_max"]) == (300, psnr[0], psnr[299])
    assert curves[7] == {7: [(0, 0.5), (19, 0.1)]}


def test_enqueue_publishes_one_message_per_job_across_batches(service_env):
    """2,500 ids (three pipeline batches): each id's message is in the queue exactly once."""
    from l335q.worker.app import _redis, enqueue, queued_job_ids

    queue, ids = service_env["L335Q_TEST_QUEUE"], list(range(1, 2_501))
    try:
        enqueue(ids, queue)
        assert _redis().llen(queue) == len(ids)
        assert queued_job_ids([queue]) == set(ids)
    finally:
        _redis().delete(queue)


def test_a_bulk_message_is_the_message_apply_async_sends(service_env):
    """What ``enqueue`` pushes to Redis is, key by key and value by value, what Celery's own ``apply_async``
    publishes for the same job id, but for the fresh ids (task id, delivery tag)."""
    import json

    from l335q.worker.app import _redis, app, enqueue, run_job

    queue, redis = service_env["L335Q_TEST_QUEUE"], _redis()

    def fresh_ids_blanked(raw: bytes) -> dict:
        message = json.loads(raw)
        assert message["headers"]["id"] == message["headers"]["root_id"] == message["properties"]["correlation_id"]
        for part, key in (("headers", "id"), ("headers", "root_id"), ("properties", "correlation_id"),
                          ("properties", "delivery_tag")):
            message[part][key] = "fresh"
        return message

    try:
        with app.producer_or_acquire() as producer:
            run_job.apply_async(args=[4242], queue=queue, producer=producer)
        celerys = fresh_ids_blanked(redis.rpop(queue))
        enqueue([4242], queue)
        ours = fresh_ids_blanked(redis.rpop(queue))
        assert ours == celerys
        enqueue([1, 2, 3], queue)
        assert [json.loads(redis.rpop(queue))["headers"]["argsrepr"] for _ in range(3)] == ["[1]", "[2]", "[3]"]
    finally:
        redis.delete(queue)


def test_a_real_worker_runs_each_bulk_published_job_once_and_acks_it(worker, service_env):
    """A submission's bulk-published messages, consumed by an unmodified ``celery worker`` (``l335q worker``):
    every job done in one attempt with one set of rows, and no message left in the queue or unacknowledged."""
    import time

    from l335q import service
    from l335q.worker.app import _redis

    from job_rows import metric_rows

    spec = {"task": "inr-init", "image": "sample:camera", "resolution": 8, "steps": 10, "depth": 2, "width": 8,
            "initialiser": "default", "seeds": "0-5", "seed_group": 1, "device": "cpu"}
    sub = service.submit(spec, queue=service_env["L335Q_TEST_QUEUE"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and service.job_counts(sub.id)["done"] < len(sub.job_ids):
        time.sleep(0.5)
    with session_scope() as s:
        jobs = s.execute(select(Job.id, Job.state, Job.attempts).where(Job.submission_id == sub.id)).all()
    assert sorted((j.state, j.attempts) for j in jobs) == [("done", 1)] * 6, jobs
    for job_id in sub.job_ids:
        assert [r[2] for r in metric_rows(job_id) if r[1] is None] == ["psnr"], job_id
    # Jobs a pack took (l335q.packing) are done before their own messages arrive: each is then a no-op the
    # worker consumes and acks, so the queue drains a little after the last job is done.
    redis = _redis()
    queue = service_env["L335Q_TEST_QUEUE"]

    def left() -> tuple[int, int]:
        return redis.llen(queue), sum(queue.encode() in m for m in redis.hvals("unacked"))

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and left() != (0, 0):
        time.sleep(0.5)
    assert left() == (0, 0), "(messages waiting, unacknowledged) after the jobs were done"
    with session_scope() as s:
        assert s.scalars(select(Job.attempts).where(Job.submission_id == sub.id)).all() == [1] * 6


# Runs the real CLI entry point and, at exit, prints the heavy modules it imported (to stderr, last line);
# sqlalchemy is reported too (only `status` must do without it).
HEAVY = ("torch", "torchvision", "matplotlib", "skimage")
RUN_AND_REPORT = ("import atexit, sys; from l335q.cli.main import main; "
                  f"atexit.register(lambda: print('imported:', sorted(m for m in {HEAVY + ('sqlalchemy',)!r} "
                  "if m in sys.modules), "
                  "file=sys.stderr)); sys.argv = ['l335q', *sys.argv[1:]]; main()")


def cli_imports(args: list[str], env: dict) -> tuple[str, list[str]]:
    """(stdout, heavy modules imported) of ``l335q ARGS`` run as a fresh process."""
    import ast
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", RUN_AND_REPORT, *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("imported: "), proc.stderr
    return proc.stdout, ast.literal_eval(last.removeprefix("imported: "))


def test_submit_status_results_import_no_torch(service_env, tmp_path):
    """What a user types to submit a grid and look at it starts without torch or matplotlib (seconds of start-up):
    `l335q submit` in service mode (the jobs are stored and published), `status` and `results`."""
    import yaml

    from l335q.worker.app import _redis

    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump(grid_spec("sample:camera", 20)))
    queue = service_env["L335Q_TEST_QUEUE"]
    try:
        out, heavy = cli_imports(["submit", str(spec), "--queue", queue], service_env)
        assert heavy == ["sqlalchemy"], heavy
        assert _redis().llen(queue) == 20
    finally:
        _redis().delete(queue)
    sub_id = int(out.split()[0])
    out, heavy = cli_imports(["status", str(sub_id)], service_env)
    assert heavy == [] and "20 queued" in out, (heavy, out)        # status reads with the driver alone
    out, heavy = cli_imports(["results", "--task", "inr-init", "--submission", str(sub_id), "--format", "json"],
                             service_env)
    assert heavy == ["sqlalchemy"], heavy


def test_every_kind_builds_its_schema_and_results_without_torch():
    """Each task kind's module (its spec schema, its results table) imports without torch or matplotlib: they
    load only inside ``run`` (a job) and ``plot`` (a figure)."""
    import subprocess
    import sys

    code = ("import sys; from l335q.tasks import KINDS, get_kind; [get_kind(k) for k in KINDS]; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
