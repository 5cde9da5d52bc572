"""Checkpoints, progress and stop requests: what a training engine needs to survive its worker.

A job trains one or more models in a fixed order (cls-compare: FCN then CNN per seed; a field job: one
batched model per chunk of seeds). Each such training is a **stage**, numbered in call order, so a job run
again (a pure function of its params) meets its stages in the same order. An engine asks its job for the
next stage and then, in its loop,

    stage = ckpt.stage()
    state = stage.load()                 # None, or the dict it saved last time: resume from there
    ...
    stage.tick(step, total, "epoch")     # progress, written with the lease
    if stage.due() or at_the_end:        # every L335Q_CHECKPOINT_S seconds, or when a stop was requested
        stage.save(step, state_dict)
    if stage.stop_requested:             # SIGTERM (warm shutdown): after saving, hand the job back
        raise Interrupted

The object also tells the worker's heartbeat how the job is doing (``Watch``): its progress, when it last
advanced (every ``tick`` and every look at ``stop_requested`` is a sign of life: a stall watchdog stops a job that
gives none for too long), its time limit (past it, ``stop_requested`` is true: the engine saves and stops) and
notes for the job's summary (a fit split after running out of memory).

States are saved with ``torch.save`` into the ``checkpoints`` table and read back with
``torch.load(..., weights_only=True)``: tensors, numbers, strings, lists and dicts only. A save happens only
while this process still holds the job's lease (its claim token); otherwise ``LeaseLost`` is raised, so a
worker that lost its job to another one stops writing. ``NO_CHECKPOINTS`` does nothing (plain calls, tests).
SQLAlchemy is imported only when a checkpoint is read or written: the engines run without it.
"""
from __future__ import annotations

import io
import os
import threading
import time

PLAN_STAGE = -1                    # the stage number of a job's plan row (``Checkpoints.plan``): not a training state
stop_event = threading.Event()     # set by the worker's SIGTERM handler: save, then hand the job back


class Interrupted(Exception):
    """The job saved its checkpoint and stopped because its worker is shutting down."""


class LeaseLost(Exception):
    """This process no longer holds the job (the reaper gave it to another worker): its work is discarded."""


def dumps(state: dict) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def loads(data: bytes) -> dict:
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


class Watch:
    """What a running job's heartbeat reads: progress, signs of life, the time limit, notes for the summary."""

    def __init__(self):
        self.progress: dict | None = None
        self.advanced_at = time.monotonic()     # the last sign of life
        self.longest_gap = 0.0                  # the longest time between two of them so far (a step's time)
        self.started = False                    # the first sign of life ends the start-up, which is no step
        self.limit_s: float | None = None
        self.deadline: float | None = None
        self.notes: dict = {}

    def advance(self) -> None:
        now = time.monotonic()
        if self.started:
            self.longest_gap = max(self.longest_gap, now - self.advanced_at)
        self.advanced_at, self.started = now, True

    def stalled_for(self, window_s: float, factor: float, startup_s: float = 0.0) -> float | None:
        """Seconds since the last sign of life when more than ``window_s`` and ``factor`` x the longest gap seen
        (a job slow but advancing is never stalled), and before the first sign of life more than ``startup_s``
        too (imports, data, building the model: no step ticks there); else None."""
        idle = time.monotonic() - self.advanced_at
        return idle if idle > max(window_s, factor * self.longest_gap, 0.0 if self.started else startup_s) else None

    def limit(self, seconds: float | None) -> None:
        self.limit_s, self.deadline = seconds, None if seconds is None else time.monotonic() + seconds

    def over_time(self, grace_s: float = 0.0) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline + grace_s

    def note(self, name: str, value) -> None:
        """A line for the job's summary (``JobContext.summary["notes"]``), e.g. how an out-of-memory fit split."""
        self.notes.setdefault(name, []).append(value)


def _test_hang() -> None:
    """Test hook: with ``L335Q_TEST_HANG`` naming a file that exists, the first job to report progress removes it
    and hangs for ever (a deadlocked call): what the stall watchdog is for."""
    marker = os.environ.get("L335Q_TEST_HANG")
    if marker:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return
        while True:
            time.sleep(3600)


class Stage:
    def __init__(self, owner: "Checkpoints", number: int):
        self.owner, self.number = owner, number

    @property
    def stop_requested(self) -> bool:
        """A stop request (SIGTERM) or the job's time limit passed; each look is also a sign of life."""
        self.owner.advance()
        return stop_event.is_set() or self.owner.over_time()

    def load(self) -> dict | None:
        return self.owner.load(self.number)

    def tick(self, done: int, total: int, unit: str) -> None:
        self.owner.progress = {"stage": self.number, "done": int(done), "total": int(total), "unit": unit}
        self.owner.advance()
        _test_hang()

    def due(self) -> bool:
        return self.stop_requested or time.monotonic() - self.owner.last_save >= self.owner.every_s

    def save(self, step: int, state: dict) -> None:
        self.owner.save(self.number, step, state)


class Checkpoints(Watch):
    """A claimed job's checkpoints in the database (``token``: the claim this process holds)."""

    def __init__(self, job_id: int, token: str, url: str | None, every_s: float):
        super().__init__()
        self.job_id, self.token, self.url, self.every_s = job_id, token, url, every_s
        self.last_save = time.monotonic()
        self.saves = 0
        self._next = 0

    def stage(self) -> Stage:
        self._next += 1
        return Stage(self, self._next - 1)

    def load(self, stage: int) -> dict | None:
        from sqlalchemy import select

        from .db import Checkpoint, session_scope, with_retries

        def read():
            with session_scope(self.url) as s:
                return s.scalar(select(Checkpoint.data).where(Checkpoint.job_id == self.job_id,
                                                              Checkpoint.stage == stage))
        data = with_retries(read, what=f"job {self.job_id}: reading its checkpoint")
        return None if data is None else loads(data)

    def plan(self, name: str, value, replace: bool = False):
        """``value`` the first time the job makes the choice ``name`` before its next stage; on every later run, the
        value recorded then. For a choice that fixes the stages that follow (a field fit's seeds per batched model,
        which follows the device: on CUDA its free memory), so that a resumed job meets the stages it saved, on
        any worker. Recorded in the job's plan row (stage ``PLAN_STAGE``), deleted with its checkpoints.
        ``replace``: record ``value`` now whatever was recorded (a fit split after running out of memory)."""
        key = f"{name}@{self._next}"
        memo = self.load(PLAN_STAGE) or {}
        if key not in memo or (replace and memo[key] != value):
            memo[key] = value
            self._write(PLAN_STAGE, 0, dumps(memo))
        return memo[key]

    def mark(self) -> int:
        """Where the next stage starts: ``rewind(mark)`` goes back there."""
        return self._next

    def rewind(self, mark: int) -> None:
        """Forget the stages from ``mark`` on, saved ones included (a fit that starts again, split smaller)."""
        self._next = mark
        self._write(None, 0, b"", above=mark)

    def save(self, stage: int, step: int, state: dict) -> None:
        self._write(stage, step, dumps(state))
        self.last_save = time.monotonic()
        self.saves += 1

    def _write(self, stage: int | None, step: int, data: bytes, above: int | None = None) -> None:
        """Replace the row of ``stage`` (None: only delete the stages from ``above`` on), while this process holds
        the job's lease (else ``LeaseLost``)."""
        from sqlalchemy import delete, update

        from .db import Checkpoint, Job, db_now, session_scope, with_retries

        def write():
            with session_scope(self.url) as s:
                held = s.execute(update(Job).where(Job.id == self.job_id, Job.claim == self.token)
                                 .values(heartbeat_at=db_now(s))).rowcount
                if not held:
                    raise LeaseLost(f"job {self.job_id}: lease lost, checkpoint not written")
                which = Checkpoint.stage == stage if stage is not None else Checkpoint.stage >= above
                s.execute(delete(Checkpoint).where(Checkpoint.job_id == self.job_id, which))
                if stage is not None:
                    s.add(Checkpoint(job_id=self.job_id, stage=stage, step=int(step), data=data))
        with_retries(write, what=f"job {self.job_id}: writing its checkpoint")


class _NoStage(Stage):
    stop_requested = False

    def __init__(self):
        pass

    def load(self):
        return None

    def tick(self, done, total, unit):
        pass

    def due(self):
        return False

    def save(self, step, state):
        pass


class NoCheckpoints:
    """Checkpoints that save nothing: every stage starts afresh, every plan is the value at hand."""

    def stage(self) -> Stage:
        return _NoStage()

    def plan(self, name: str, value, replace: bool = False):
        return value

    def mark(self) -> int:
        return getattr(self, "_next", 0)

    def rewind(self, mark: int) -> None:
        if hasattr(self, "_next"):
            self._next = mark

    def note(self, name: str, value) -> None:
        pass


NO_CHECKPOINTS = NoCheckpoints()


def rng_state() -> dict:
    """The global RNG states a training loop draws from (torch's CPU and, where used, CUDA generators)."""
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
