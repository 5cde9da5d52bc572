"""Job packing: a worker that claims a small job also claims queued jobs of the same shape and runs them all as
ONE batched run (the fields engine trains every seed of a batch exactly as alone), then commits each job's rows
by its own claim.

**Shape** (the pack key): the task kind and every param but ``seeds`` (a kind may define ``pack_key(params)``;
the field kinds keep ``sigma: auto`` jobs alone); only kinds with ``run_packed(list of params, list of contexts)``
pack (``inr-init``, ``inr-arch``, ``ffn-sigma``): they fit ``all_seeds`` once and write each job's ``shares``.
``L335Q_PACK_MAX`` caps a pack's jobs (default 16; 1 turns packing off).

**Which jobs** (``claim_packmates``, one short transaction after the first job's claim, same rules as a claim):
  * only ``queued`` jobs of the same task kind and broker queue as the first job, its own submission's first, in
    id order among a window of ``WINDOW`` x the cap; rows another transaction holds locked are skipped
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so a job being claimed elsewhere is never taken;
  * never a job with a checkpoint (it resumes alone) nor one whose worker was lost before (``error`` set by
    the reaper, or ``attempts`` > 0: it runs alone, so a job that kills its worker cannot take healthy jobs
    down with it), and no pack forms around a first job that is resumed or was lost before;
  * each job taken gets its own claim token and lease (``runner.take``), renewed by the one heartbeat; every
    token of a pack, the first job's included (re-tokened in the same transaction), starts with
    ``runner.PACKED``.
A taken job's broker message, when delivered, finds the job running under a live lease or final: a no-op.

**Resume semantics**: a packed run is not checkpointed (``Unsaved``): it reports progress and obeys a stop
request, but saves nothing. On a stop request (warm shutdown) every job of the pack is handed back (queued,
attempt not counted) and runs again from scratch; a lost worker's packed jobs each lose their lease and the
reaper re-queues every one of them, the loss NOT counted against ``max_attempts`` (it may be another job's,
or the pack's size): they run alone from then on, where their own losses count. So a pack neither fails a
healthy job nor lets a job that kills its worker escape ``max_attempts``. Packs are for small jobs, so the
work lost is small; a job on its own keeps its checkpoints as before.

**Same rows**: a job's share of a packed run is ``FitResult.pick`` of its seeds, written by the kind's own code,
so a packed job writes the rows it writes alone: bit for bit on the CPU (``tests/test_packing.py``: ``inr-init``,
``inr-arch``, ``ffn-sigma``; a sigmoid output is computed member by member there, ``fields.models.per_member``).

**Failure**: an error in the packed run fails every job of the pack with that error (the jobs share their
shape, so a deterministic error is what each would have met alone).
"""
from __future__ import annotations

import json
from dataclasses import replace

from sqlalchemy import exists, select, update

from . import UserError
from .checkpoints import NoCheckpoints, Stage, Watch
from .config import pack_max
from .db import Checkpoint, Job, db_now, session_scope, with_retries
from .tasks import get_kind

WINDOW = 8          # queued rows looked at (and briefly locked) per job a pack may still take


def same_but_seeds(params: dict) -> str:
    """The default pack key: every param but ``seeds``."""
    return json.dumps({k: v for k, v in params.items() if k != "seeds"}, sort_keys=True, default=str)


def pack_key(task: str, params: dict) -> str | None:
    """The shape of a job of ``task``: None when it does not pack; jobs of one task with equal keys can share one
    batched run. A kind's own ``pack_key(params)`` (None: this job runs alone) replaces ``same_but_seeds``."""
    try:
        kind = get_kind(task)
    except UserError:           # a kind this worker lacks: the job's own run records the error
        return None
    if not hasattr(kind, "run_packed"):
        return None
    return getattr(kind, "pack_key", same_but_seeds)(params)


def _pack(job_id: int, claim, token: str, worker: str, lease_s: float, url: str | None, limit: int) -> dict:
    from .runner import take

    key = pack_key(claim.task, claim.params)
    with session_scope(url) as s:
        same_queue = Job.queue.is_(None) if claim.queue is None else Job.queue == claim.queue
        rows = s.scalars(select(Job).where(
            Job.state == "queued", Job.task == claim.task, same_queue, Job.id != job_id, Job.attempts == 0,
            Job.error.is_(None), ~exists().where(Checkpoint.job_id == Job.id))
            .order_by(Job.submission_id != claim.submission_id, Job.id).limit(WINDOW * limit)
            .with_for_update(skip_locked=True))
        mates = [job for job in rows if pack_key(job.task, job.params) == key][:limit]
        # the first job's claim becomes a pack's claim too (``token``; matched also when this is a retry)
        if not mates or not s.execute(update(Job).where(Job.id == job_id, Job.claim.in_([claim.token, token]))
                                      .values(claim=token)).rowcount:
            return {}
        now = db_now(s)
        return {job_id: replace(claim, token=token),
                **{job.id: take(s, job, worker, lease_s, now, packed=True) for job in mates}}


def claim_packmates(job_id: int, claim, worker: str, lease_s: float, url: str | None) -> dict:
    """After ``job_id``'s claim: claim up to ``L335Q_PACK_MAX`` - 1 queued jobs of its shape (module doc).
    {job id: runner.Claim} of the whole pack, ``job_id`` first with its new (pack) claim token; empty when the
    job runs alone."""
    from .runner import new_token

    limit = pack_max() - 1
    alone = claim.resumed or claim.attempt != 1 or claim.lost_before        # resumed, or lost a worker before
    if limit < 1 or alone or pack_key(claim.task, claim.params) is None:
        return {}
    token = new_token(packed=True)
    return with_retries(lambda: _pack(job_id, claim, token, worker, lease_s, url, limit),
                        what=f"job {job_id}: claiming its pack")


def run_packed(task: str, params: list[dict], ctxs: list) -> None:
    """Run jobs of one shape as one batched run through their kind's ``run_packed``; each context then holds
    exactly what the job would have written alone, and its summary says which pack ran it."""
    get_kind(task).run_packed(params, ctxs)
    for ctx in ctxs:
        ctx.summary = {**(ctx.summary or {}), "packed": {"jobs": len(ctxs), "first_job": ctxs[0].job_id}}


def all_seeds(jobs: list[dict]) -> list[int]:
    """The seeds of a pack's batched run: every job's seeds, in job order."""
    return [seed for p in jobs for seed in p["seeds"]]


def shares(jobs: list[dict], ctxs: list, result) -> list[tuple]:
    """(params, context, that job's ``FitResult``) for every job of a fit of ``all_seeds(jobs)``."""
    out, at = [], 0
    for params, ctx in zip(jobs, ctxs):
        out.append((params, ctx, result.pick(slice(at, at + len(params["seeds"])))))
        at += len(params["seeds"])
    return out


class _UnsavedStage(Stage):
    def load(self):
        return None

    def due(self) -> bool:
        return self.stop_requested          # the engine then "saves" (nothing) and raises Interrupted

    def save(self, step, state) -> None:
        pass


class Unsaved(Watch, NoCheckpoints):
    """The checkpoints of a packed run: what the heartbeat watches (``Watch``) and the stop request, no saves, no
    resume."""

    def __init__(self):
        super().__init__()
        self._next = 0

    def stage(self) -> Stage:
        self._next += 1
        return _UnsavedStage(self, self._next - 1)
