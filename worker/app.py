"""The Celery app: configured from the environment, JSON messages only, one job id per message.

A message only says "look at job N now"; the job's parameters and state live in the database, and
``execute_job`` takes a job only if nobody alive holds it, so a duplicated or re-published message costs
nothing. What a worker adds to Celery:
  * a reaper thread in the main process (``l335q.service.reap`` every ``L335Q_REAP_S``, and once at start):
    jobs of lost workers are re-queued, jobs whose message a flushed broker lost are published again;
  * a warm shutdown (SIGTERM) that reaches the running jobs: each pool process saves a checkpoint and hands
    its job back, and the job is published again for another worker;
  * a stall watchdog (``runner.Heartbeat``): a pool process whose job stalled publishes it again and kills
    itself (``_stalled``); Celery starts a new pool process;
  * the submission's notification once its last job ended (``l335q.notify``; the reaper retries it);
  * a warning at start when Redis may evict keys (``maxmemory-policy``), which would lose messages.
Acks are late; a pool process that dies is not redelivered by Celery (no reject-on-worker-lost loop for a job
that kills its process): its lease expires and the reaper re-queues it, up to ``max_attempts``.
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import signal
import threading
import uuid

from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready, worker_shutting_down

from l335q import UserError, notify
from l335q.config import broker_url, reap_seconds, redact
from l335q.db import after_fork
from l335q.runner import execute_job
from l335q.service import QUEUE

log = logging.getLogger("l335q.worker")

app = Celery("l335q")
app.conf.update(
    broker_url=broker_url() or "redis://127.0.0.1:6379/0",
    task_serializer="json", accept_content=["json"], result_serializer="json", event_serializer="json",
    task_ignore_result=True,
    task_acks_late=True, task_reject_on_worker_lost=False, worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
    # Redis redelivers an unacked message after this long; recovery does not wait for it (leases do that)
    broker_transport_options={"visibility_timeout": int(os.environ.get("L335Q_VISIBILITY_TIMEOUT", 6 * 3600))},
    worker_hijack_root_logger=False,
    worker_proc_alive_timeout=60,    # a new pool process on a busy machine can take long to report
)


@app.task(name="l335q.run_job", bind=True)
def run_job(self, job_id: int) -> str | None:
    """Run one job (with the queued jobs of its shape it packs, see ``l335q.packing``). Jobs handed back by a
    stopping worker (the job, or every job of its pack) are published again for another one. Whatever escapes
    (the database away for longer than the retries) leaves the jobs to their leases and the reaper."""
    released: list[int] = []
    queue = self.request.delivery_info.get("routing_key") or QUEUE
    state = execute_job(int(job_id), worker=self.request.hostname, released=released, on_stall=_stalled(queue))
    if released:
        enqueue(released, queue)
    try:                         # its submission's last job: the notification (l335q.notify; the reaper retries)
        notify.settle_jobs([int(job_id)])
    except Exception as exc:
        log.warning("job %s: notification not sent now (the reaper tries again): %s", job_id, exc)
    return state


def _stalled(queue: str):
    """What a pool process does when its job stalled (``runner.Heartbeat``): publish the re-queued jobs again
    (if that fails, the reaper does it after ``L335Q_QUEUED_GRACE_S``), then end this pool process, whose main
    thread is stuck; Celery's main process starts a fresh one and the worker goes on."""
    def on_stall(requeued: list[int]) -> None:
        try:
            if requeued:
                enqueue(requeued, queue)
        finally:
            log.error("pool process %d: its job stalled; killing it (the worker starts a new one)", os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)
    return on_stall


# ----------------------------------------------------------------------------- pool processes


def _on_sigterm(signum, frame):
    """In a pool process running a job: the job saves its checkpoint and hands itself back."""
    from l335q.checkpoints import stop_event

    stop_event.set()


_idle_handler = []      # billiard's own SIGTERM handler (exit), put back when a job ends


@worker_process_init.connect
def _pool_process_init(**_):
    """A pool process opens its own database connections (never the parent's, see ``db.after_fork``) and gets
    its share of the CPU cores (start() sets OMP_NUM_THREADS): PyTorch processes that each take every core
    thrash one another as soon as two jobs run side by side."""
    after_fork()
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@task_prerun.connect
def _job_starts(**_):
    """While a job runs, SIGTERM means "checkpoint and hand back" (billiard installs its own handler after
    worker_process_init, so this is set per job); an idle pool process keeps billiard's (it exits)."""
    from l335q.checkpoints import stop_event

    stop_event.clear()
    _idle_handler[:] = [signal.signal(signal.SIGTERM, _on_sigterm)]


@task_postrun.connect
def _job_ends(**_):
    if _idle_handler:
        signal.signal(signal.SIGTERM, _idle_handler.pop())


@worker_shutting_down.connect
def _stop_jobs(**_):
    """Warm shutdown: ask every pool process's running job to checkpoint and hand itself back."""
    import billiard.process

    for child in billiard.process.active_children():
        try:
            os.kill(child.pid, signal.SIGTERM)
        except (ProcessLookupError, TypeError):
            pass


# ----------------------------------------------------------------------------- the reaper thread

@worker_ready.connect
def _start_reaper(**_):
    threading.Thread(target=_reap_forever, daemon=True, name="l335q-reaper").start()


def _reap_forever() -> None:
    from l335q.service import reap

    stop = threading.Event()
    while True:
        try:
            result = reap()
            if result:
                log.warning("reaper: %s", result.text())
        except Exception as exc:       # the database or broker restarting: try again next round
            log.warning("reaper: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        stop.wait(reap_seconds())


# ----------------------------------------------------------------------------- the broker

def check_broker() -> None:
    """Raise a one-line UserError when the broker cannot be reached."""
    url = app.conf.broker_url
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0.5, timeout=3)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"broker unreachable at {redact(url)}: {reason}") from None


def enqueue(job_ids: list[int], queue: str = QUEUE) -> None:
    """One normal Celery task message per job id. On Redis they are built here (``task_messages``) and pushed
    ``PUBLISH_CHUNK`` at a time, one round trip each; on any other broker, one ``apply_async`` each. The queue is
    declared once per call. A failure mid-way loses the unsent messages; their jobs stay queued in the
    database and the reaper publishes them."""
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(app.amqp.queues[queue])      # once, not once per message (declare=[] below)
        if not _is_redis():
            for job_id in job_ids:
                run_job.apply_async(args=[job_id], queue=queue, producer=producer, declare=[])
            return
        client = producer.channel.client                     # kombu's own Redis client of this connection
        messages = task_messages(job_ids, queue)
        while chunk := list(itertools.islice(messages, PUBLISH_CHUNK)):
            client.lpush(queue, *chunk)      # one LPUSH of many: consumed in this order, as one LPUSH each


PUBLISH_CHUNK = 1000


def task_messages(job_ids, queue: str):
    """The messages ``run_job.apply_async(args=[job_id], queue=queue)`` puts on a Redis list, one per job id,
    built without Celery's per-call machinery: Celery's own protocol-2 headers and body (``amqp.as_task_v2``,
    called once for a template), wrapped the way kombu's virtual channel wraps a published message
    (``prepare_message`` + ``basic_publish``: JSON body in base64, a delivery tag, the default exchange routed
    by queue name, priority 0 = the list named ``queue``); per job only its ids and argument change.
    tests/test_grid.py compares one key by key with what ``apply_async`` sends."""
    headers, properties, (_, kwargs, embed), _ = app.amqp.as_task_v2(
        "", run_job.name, args=[0], reply_to=app.thread_oid, ignore_result=True, origin=anon_nodename())
    properties.update(delivery_mode=2, delivery_info={"exchange": "", "routing_key": queue}, priority=0,
                      body_encoding="base64")
    for job_id in job_ids:
        task_id, job_id = str(uuid.uuid4()), int(job_id)
        yield json.dumps({
            "body": base64.b64encode(json.dumps([[job_id], kwargs, embed]).encode()).decode(),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {**headers, "id": task_id, "root_id": task_id, "argsrepr": f"[{job_id}]"},
            "properties": {**properties, "correlation_id": task_id, "delivery_tag": str(uuid.uuid4())}})


def _is_redis() -> bool:
    return str(app.conf.broker_url).startswith(("redis://", "rediss://"))


def _redis():
    import redis

    return redis.Redis.from_url(app.conf.broker_url, socket_timeout=10)


def queued_job_ids(queues) -> set[int] | None:
    """Job ids whose message waits in these queues (Redis lists); None when the broker is not Redis."""
    if not _is_redis():
        return None
    r = _redis()
    out: set[int] = set()
    for queue in queues:
        for raw in r.lrange(queue, 0, -1):
            try:
                body = json.loads(base64.b64decode(json.loads(raw)["body"]))
                out.add(int(body[0][0]))
            except (ValueError, KeyError, IndexError, TypeError):
                continue
    return out


def warn_if_evicting() -> str | None:
    """A warning when Redis may evict keys (then queued messages can vanish); None when it is safe."""
    if not _is_redis():
        return None
    try:
        policy = _redis().config_get("maxmemory-policy").get("maxmemory-policy")
    except Exception:
        return None                     # CONFIG may be disabled on managed Redis: nothing to say
    if policy and policy != "noeviction":
        return (f"warning: Redis maxmemory-policy is {policy!r}: it may evict queued job messages; set "
                "maxmemory-policy noeviction (the reaper re-publishes lost messages, after a delay)")
    return None


def start(concurrency: int = 1, queues: str = QUEUE, device: str | None = None, loglevel: str = "INFO",
          name: str | None = None) -> None:
    if device:
        os.environ["L335Q_DEVICE"] = device
    check_broker()
    warning = warn_if_evicting()
    if warning:
        log.warning(warning)
        print(warning, flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // concurrency)))
    import torch  # noqa: F401  (imported once here: pool processes, also replacements of lost ones, inherit it)

    app.worker_main(["worker", f"--concurrency={concurrency}", f"--queues={queues}", f"--loglevel={loglevel}",
                     "--without-gossip", "--without-mingle", "--without-heartbeat",
                     *([f"--hostname={name}"] if name else [])])
