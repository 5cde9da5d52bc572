"""The Celery app: configured from the environment, JSON messages only, one job per message.

A message carries only a job id; the job's parameters live in the database. Late acks plus
reject-on-worker-lost mean a job whose worker dies is delivered again; ``execute_job`` makes sure a
job is done exactly once in the database however often it is delivered.
"""
from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

from l335q import UserError
from l335q.config import broker_url, redact
from l335q.db import after_fork
from l335q.runner import execute_job, mark_failed

DEFAULT_QUEUE = "l335q"

app = Celery("l335q")
app.conf.update(
    broker_url=broker_url() or "redis://127.0.0.1:6379/0",
    task_serializer="json", accept_content=["json"], result_serializer="json", event_serializer="json",
    task_ignore_result=True,
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    task_default_queue=DEFAULT_QUEUE,
    broker_connection_retry_on_startup=True,
    # a Redis broker redelivers an unacked message after this long: longer than any one job
    broker_transport_options={"visibility_timeout": int(os.environ.get("L335Q_VISIBILITY_TIMEOUT", 6 * 3600))},
    worker_hijack_root_logger=False,
)


@app.task(name="l335q.run_job", bind=True, max_retries=3)
def run_job(self, job_id: int) -> str | None:
    """Run one job. A task's own errors are stored by ``execute_job``; what escapes it is the service's
    (the database dropped the connection mid-commit, ...): the job is delivered again a little later, and
    after the last try it is marked failed with that error, never left 'running' with nobody on it."""
    try:
        return execute_job(int(job_id), worker=self.request.hostname)
    except Exception as exc:
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=5 * 2 ** self.request.retries)
        mark_failed(int(job_id), f"gave up after {self.max_retries + 1} tries: {type(exc).__name__}: {exc}")
        raise


@worker_process_init.connect
def _pool_process_init(**_):
    """A pool process opens its own database connections (never the parent's, see ``db.after_fork``) and
    gets its share of the CPU cores (start() sets OMP_NUM_THREADS): PyTorch processes that each take every
    core thrash one another as soon as two jobs run side by side."""
    after_fork()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def check_broker() -> None:
    """Raise a one-line UserError when the broker cannot be reached."""
    url = app.conf.broker_url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=3)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"broker unreachable at {redact(url)}: {reason}") from None


def enqueue(job_ids: list[int], queue: str = DEFAULT_QUEUE) -> None:
    with app.producer_or_acquire() as producer:
        for job_id in job_ids:
            run_job.apply_async(args=[job_id], queue=queue, producer=producer)


def start(concurrency: int = 1, queues: str = DEFAULT_QUEUE, device: str | None = None, loglevel: str = "INFO") -> None:
    if device:
        os.environ["L335Q_DEVICE"] = device
    check_broker()
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // concurrency)))
    app.worker_main(["worker", f"--concurrency={concurrency}", f"--queues={queues}", f"--loglevel={loglevel}",
                     "--without-gossip", "--without-mingle", "--without-heartbeat"])
