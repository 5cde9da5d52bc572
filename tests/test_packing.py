"""Job packing (``l335q.packing``): queued jobs of one shape run as one batched run and write exactly the rows
they write one by one; a pack never takes a job of another shape, another queue, a job claimed elsewhere, a job
that lost a worker before or one with a checkpoint; a stopped pack hands all its jobs back; a lost worker's
packed jobs are all re-queued by the reaper; through a real worker the other jobs' messages are no-ops."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from l335q.checkpoints import stop_event
from l335q.db import Checkpoint, Job, Metric, session_scope, utcnow
from l335q.runner import RELEASED, _claim, execute_job
from l335q.service import reap
from l335q.submit import create_submission
from job_rows import artifact_rows, metric_rows

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SMALL = {"task": "inr-init", "image": "sample:camera", "resolution": 10, "steps": 120, "depth": 3, "width": 16,
         "initialiser": "default", "output": "relu", "seeds": "0-4", "seed_group": 1, "device": "cpu"}


@pytest.fixture(autouse=True)
def packing_on(monkeypatch):
    """These tests pin the cap at 16 (the default) unless they set their own."""
    monkeypatch.setenv("L335Q_PACK_MAX", "16")


def rows(job_id: int) -> tuple[list, list]:
    """A job's metric rows and artifacts (``bench/job_rows.py``)."""
    return metric_rows(job_id), artifact_rows(job_id)


def jobs(ids: list[int]) -> list[Job]:
    with session_scope() as s:
        return [s.get(Job, i) for i in ids]


def packed_by(job: Job) -> int | None:
    return ((job.result or {}).get("packed") or {}).get("first_job")


ARCH = {"task": "inr-arch", "image": "sample:camera", "resolution": 10, "steps": 100, "depth": 3, "width": 16,
        "loss": "huber", "encoding": "gaussian", "features": 16, "sigma": 3, "split": "every-other",
        "seeds": "0-3", "seed_group": 1, "device": "cpu"}
FFN = {"task": "ffn-sigma", "image": "sample:camera", "resolution": 10, "steps": 100, "depth": 3, "width": 16,
       "features": 16, "sigma": [2], "auto": False, "seeds": "0-5", "seed_group": 2, "device": "cpu"}


def same_rows(packed: int, alone: int) -> None:
    """The same metric rows and artifacts, bit for bit."""
    assert rows(packed) == rows(alone)


# Bit for bit on the CPU, with a ReLU or a sigmoid output (computed member by member: ``models.per_member``)
# and with Fourier features; with a bfloat16 forward too.
@pytest.mark.parametrize("spec", [SMALL, {**SMALL, "seed_group": 2, "initialiser": "mean-colour"}, ARCH, FFN,
                                  {**ARCH, "precision": "bf16"}],
                         ids=["inr-init", "inr-init-groups-of-2", "inr-arch", "ffn-sigma", "inr-arch-bf16"])
def test_packed_jobs_write_exactly_the_rows_of_one_by_one(spec, monkeypatch):
    monkeypatch.setenv("L335Q_PACK_MAX", "1")                 # packing off: one job at a time
    _, alone = create_submission(spec)
    assert [execute_job(i) for i in alone] == ["done"] * len(alone)
    assert all(packed_by(j) is None for j in jobs(alone))

    monkeypatch.setenv("L335Q_PACK_MAX", "16")
    _, packed = create_submission({**spec, "fresh": True})          # fitted again, not reused (l335q.reuse)
    assert len(packed) == len(alone) >= 3
    assert execute_job(packed[0]) == "done"
    assert [(j.state, j.attempts, j.claim, packed_by(j)) for j in jobs(packed)] == \
        [("done", 1, None, packed[0])] * len(packed)
    assert [execute_job(i) for i in packed[1:]] == [None] * (len(packed) - 1)    # their messages: no-ops
    for a, p in zip(alone, packed):
        metrics, arts = rows(p)
        assert metrics and arts and {s for s, _, _, _ in metrics if s is not None} == set(jobs([p])[0].params["seeds"])
        same_rows(p, a)


def test_sigma_auto_field_jobs_run_alone():
    """σ auto is chosen from a job's own first seed: such jobs are never packed (the explicit-σ ones are)."""
    _, ids = create_submission({**FFN, "sigma": [2, "auto"], "auto": True, "seeds": "0-3", "steps": 20})
    with session_scope() as s:
        auto = [i for i in ids if s.get(Job, i).params["sigma"] == "auto"]
    explicit = [i for i in ids if i not in auto]
    assert len(auto) == len(explicit) == 2
    assert execute_job(auto[0]) == "done" and packed_by(jobs(auto)[0]) is None
    assert [j.state for j in jobs(auto[1:] + explicit)] == ["queued"] * 3
    assert execute_job(explicit[0]) == "done"
    assert [packed_by(j) for j in jobs(explicit)] == [explicit[0]] * 2


def test_pack_max_caps_a_pack(monkeypatch):
    monkeypatch.setenv("L335Q_PACK_MAX", "2")
    _, ids = create_submission(SMALL)
    execute_job(ids[0])
    assert [j.state for j in jobs(ids)] == ["done", "done", "queued", "queued", "queued"]


def test_packing_never_takes_another_shape_queue_or_a_held_job(monkeypatch):
    """First job: default / 10 px. Taken: only the queued default / 10 px jobs on its queue that no other worker
    holds, never lost a worker and have no checkpoint; every other job is left as it was."""
    monkeypatch.setenv("L335Q_LEASE_S", "30")
    _, grid = create_submission({**SMALL, "initialiser": ["default", "xavier-normal"], "seeds": "0-3"})
    with session_scope() as s:
        inits = {j.id: j.params["initialiser"] for j in s.scalars(select(Job).where(Job.id.in_(grid)))}
    same = [i for i in grid if inits[i] == "default"]
    other_init = [i for i in grid if inits[i] != "default"]
    _, other_res = create_submission({**SMALL, "resolution": 12, "seeds": "0-1"})
    _, other_task = create_submission({"task": "inr-arch", "image": "sample:camera", "resolution": 10, "steps": 5,
                                       "depth": 2, "width": 8, "seeds": [0], "device": "cpu"})
    _, other_queue = create_submission({**SMALL, "seeds": "10-11"}, queue="elsewhere")
    _, later = create_submission({**SMALL, "seeds": "20-21"})     # same shape, another submission: may be taken

    held = same[1]
    assert _claim(held, "another-worker", 30, None) is not None    # claimed elsewhere, its lease alive
    lost_before, with_checkpoint = same[2], same[3]
    with session_scope() as s:
        s.execute(update(Job).where(Job.id == lost_before).values(attempts=1, error="worker x lost"))
        s.add(Checkpoint(job_id=with_checkpoint, stage=0, step=50, data=b"not read"))
    held_claim = jobs([held])[0].claim

    assert execute_job(same[0]) == "done"
    taken = {j.id for j in jobs(grid + other_res + other_task + other_queue + later) if packed_by(j) == same[0]}
    assert taken == {same[0], *later}
    h = jobs([held])[0]
    assert (h.state, h.claim, h.worker) == ("running", held_claim, "another-worker")
    for j in jobs([lost_before, with_checkpoint] + other_init + other_res + other_task + other_queue):
        assert j.state == "queued", (j.id, j.state)
    with session_scope() as s:
        assert s.scalar(select(Metric.id).where(Metric.job_id == held).limit(1)) is None


def test_a_stopped_pack_hands_every_job_back_and_reruns_them(monkeypatch):
    monkeypatch.setenv("L335Q_PACK_MAX", "1")
    _, alone = create_submission({**SMALL, "seeds": "0-2"})
    for i in alone:
        execute_job(i)
    monkeypatch.setenv("L335Q_PACK_MAX", "16")
    _, ids = create_submission({**SMALL, "seeds": "0-2", "fresh": True})
    stop_event.set()                                           # a warm shutdown: the run stops at its first check
    released: list[int] = []
    try:
        assert execute_job(ids[0], released=released) == RELEASED
    finally:
        stop_event.clear()
    assert sorted(released) == ids
    assert [(j.state, j.attempts, j.claim) for j in jobs(ids)] == [("queued", 0, None)] * 3
    with session_scope() as s:
        assert s.scalar(select(Metric.id).where(Metric.job_id.in_(ids)).limit(1)) is None
        assert s.scalar(select(Checkpoint.id).where(Checkpoint.job_id.in_(ids)).limit(1)) is None
    assert execute_job(ids[0]) == "done"                       # packed again, from scratch
    assert [packed_by(j) for j in jobs(ids)] == [ids[0]] * 3
    for p, a in zip(ids, alone):
        same_rows(p, a)


def test_a_lost_workers_packed_jobs_are_all_requeued_by_the_reaper(monkeypatch):
    from l335q.packing import claim_packmates

    _, ids = create_submission({**SMALL, "seeds": "0-3"})
    claim = _claim(ids[0], "doomed", 30, None)
    pack = claim_packmates(ids[0], claim, "doomed", 30, None)    # the worker claims its pack, then dies
    assert sorted(pack) == ids
    assert len({c.token for c in pack.values()} - {claim.token}) == 4       # a claim token of its own each
    with session_scope() as s:
        s.execute(update(Job).where(Job.id.in_(ids)).values(heartbeat_at=utcnow() - timedelta(seconds=60)))
    assert sorted(reap().requeued) == ids
    assert [(j.state, j.attempts, j.claim) for j in jobs(ids)] == [("queued", 0, None)] * 4   # loss not counted
    assert all("lost while this job ran in a pack" in j.error for j in jobs(ids))
    assert execute_job(ids[0]) == "done"                       # lost once: now each runs alone
    assert [j.state for j in jobs(ids)] == ["done", "queued", "queued", "queued"]
    assert packed_by(jobs(ids)[0]) is None


def test_a_pack_loss_never_fails_a_job_and_alone_losses_still_count():
    """max_attempts 1: a job lost in a pack is queued again (the loss may be another job's); lost again, alone,
    it fails: the pack did not use up its attempts, nor let it escape them."""
    from l335q.packing import claim_packmates
    from l335q.runner import PACKED

    _, ids = create_submission({**SMALL, "seeds": "0-2", "max_attempts": 1})

    def lose_worker():
        with session_scope() as s:
            s.execute(update(Job).where(Job.id.in_(ids), Job.state == "running")
                      .values(heartbeat_at=utcnow() - timedelta(seconds=60)))
        return reap()

    pack = claim_packmates(ids[0], _claim(ids[0], "doomed", 30, None), "doomed", 30, None)
    assert sorted(pack) == ids and all(c.token.startswith(PACKED) for c in pack.values())
    assert [j.claim for j in jobs(ids)] == [pack[i].token for i in ids]          # the first job re-tokened too
    assert sorted(lose_worker().requeued) == ids
    alone = _claim(ids[1], "doomed-again", 30, None)
    assert alone.lost_before and claim_packmates(ids[1], alone, "doomed-again", 30, None) == {}
    assert not alone.token.startswith(PACKED)
    assert lose_worker().failed == [ids[1]]
    assert [j.state for j in jobs(ids)] == ["queued", "failed", "queued"]


@pytest.mark.slow
def test_a_worker_packs_a_grid_and_each_job_is_committed_once(worker, service_env, tmp_path, monkeypatch):
    """A real worker process on Redis and PostgreSQL: the first delivery runs the pack, the other jobs'
    deliveries are dropped, every job is done once with the rows of the same job run alone in this process."""
    import time

    from l335q.service import submit

    spec = {**SMALL, "seeds": "0-5"}
    sub = submit(spec, queue=service_env["L335Q_TEST_QUEUE"])
    log = tmp_path / "worker0.log"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (any(j.state != "done" for j in jobs(sub.job_ids))
                                           or log.read_text().count("already final") < 5):
        time.sleep(0.5)
    done = jobs(sub.job_ids)
    assert [(j.state, j.attempts, packed_by(j)) for j in done] == [("done", 1, sub.job_ids[0])] * 6, \
        log.read_text()[-3000:]
    assert log.read_text().count("already final") == 5         # the packed jobs' own messages: no-ops
    monkeypatch.setenv("L335Q_PACK_MAX", "1")
    _, alone = create_submission({**spec, "fresh": True})
    for a, p in zip(alone, sub.job_ids):
        assert execute_job(a) == "done"
        same_rows(p, a)
