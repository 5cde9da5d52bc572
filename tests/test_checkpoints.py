"""Checkpoints in one process: a job stopped mid-training hands itself back with a checkpoint, and run again it
resumes and ends with exactly the numbers of the same job run without a stop (CPU, one thread).

Worker processes killed for real (SIGKILL, SIGTERM) are in tests/test_faults.py.
"""
from __future__ import annotations


import pytest
from sqlalchemy import select

from l335q.checkpoints import PLAN_STAGE, Checkpoints, loads
from l335q.data.images import load_image, resize
from l335q.db import Checkpoint, Job, Metric, session_scope
from l335q.runner import RELEASED, execute_job
from l335q.submit import create_submission
from job_rows import metric_rows as numbers, stop_when

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# fresh: each test fits again what its plain run fitted (no reuse of that run's rows, l335q.reuse)
CLS = {"task": "cls-compare", "seeds": [3], "epochs": 3, "train_subset": 600, "test_subset": 300, "batch_size": 50,
       "device": "cpu", "fresh": True}
FIELD = {"task": "inr-init", "image": "sample:camera", "resolution": 12, "steps": 3000, "depth": 3, "width": 24,
         "initialiser": "default", "seeds": "0-2", "seed_group": 3, "device": "cpu", "fresh": True}   # ~1 s: the stop at step 150
#                                                               arrives mid-fit (400 steps often ended before it)


def run_until_stopped(job_id: int, done: int, stage: int) -> None:
    """Run the job with a stop requested at ``done`` in ``stage``: it must hand itself back."""
    finish = stop_when(job_id, stage, done)
    try:
        assert execute_job(job_id) == RELEASED
    finally:
        finish()


@pytest.mark.parametrize("spec,stage,done,fast", [(CLS, 1, 1, None), (CLS, 1, 1, "1"), (FIELD, 0, 150, None)],
                         ids=["classification", "classification-fused", "field"])
def test_stopped_and_resumed_equals_uninterrupted(spec, stage, done, fast, monkeypatch):
    """fast "1": L335Q_FAST=1, the classification job's models train in the fused loop (eagerly on the CPU)."""
    monkeypatch.setenv("L335Q_LEASE_S", "0.3")           # progress reaches the row every 0.1 s
    monkeypatch.setenv("L335Q_CHECKPOINT_S", "3600")     # no periodic save: the stop's own save is what resumes
    if fast:
        monkeypatch.setenv("L335Q_FAST", fast)
    _, (plain,) = create_submission(spec)
    assert execute_job(plain) == "done"

    _, (job_id,) = create_submission(spec)
    run_until_stopped(job_id, done, stage)
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.attempts, job.claim) == ("queued", 0, None)
        saved = list(s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)))
        assert saved and all(c.data for c in saved)
        if spec is CLS:                                  # the checkpoints' format is the loop's that wrote them
            assert all(("fused" in loads(c.data)) == bool(fast) for c in saved)
        assert s.scalar(select(Metric.id).where(Metric.job_id == job_id).limit(1)) is None
    assert execute_job(job_id) == "done"
    with session_scope() as s:
        assert s.get(Job, job_id).attempts == 1
        assert list(s.scalars(select(Checkpoint.id).where(Checkpoint.job_id == job_id))) == []   # deleted at the end
    assert numbers(job_id) == numbers(plain)


def test_a_field_job_resumed_where_more_seeds_fit_keeps_its_stages(monkeypatch):
    """The seeds per batched model follow the device's memory (on CUDA its free memory): a job stopped on a worker
    where 2 of its 3 seeds fit at once resumes, on a worker where all 3 fit, in the stages it saved (2 + 1), and
    ends with the numbers of the job run without a stop."""
    import l335q.fields.engine as engine
    import l335q.fields.memory as memory

    monkeypatch.setenv("L335Q_LEASE_S", "0.3")
    monkeypatch.setenv("L335Q_CHECKPOINT_S", "3600")
    _, (plain,) = create_submission(FIELD)
    assert execute_job(plain) == "done"
    _, (job_id,) = create_submission(FIELD)
    with monkeypatch.context() as small:                 # the first worker: room for 2 seeds of this fit
        small.setattr(memory, "CPU_BUDGET_BYTES", 2.5 * engine.bytes_per_seed(
            engine.FieldConfig(depth=3, width=24, steps=1), 12 * 12, 2))
        run_until_stopped(job_id, 150, 0)
    with session_scope() as s:
        saved = {c.stage: loads(c.data) for c in s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id))}
    assert saved[PLAN_STAGE] == {"chunk@0": 2} and saved[0]["model"]["mlp.biases.0"].shape[0] == 2
    assert execute_job(job_id) == "done"
    assert numbers(job_id) == numbers(plain)


def test_a_plan_is_kept_per_fit_across_runs_and_workers():
    """``Checkpoints.plan``: each fit of a job (here two, as an upsample job makes) records its seed chunk before its
    stages; a second run reads each fit's own value back, whatever the chunks it would choose itself."""
    from l335q.fields.engine import FieldConfig, fit_image
    from l335q.runner import _claim

    img = resize(load_image("sample:camera"), 16)                  # 256 pixels
    small, big = FieldConfig(depth=2, width=16, steps=2), FieldConfig(depth=2, width=256, steps=2)   # 3 at once / 1
    _, (job_id,) = create_submission(FIELD)
    ckpt = Checkpoints(job_id, _claim(job_id, "w", 30, None).token, None, every_s=3600)
    assert [fit_image(img, c, [0, 1, 2], ckpt=ckpt).chunk for c in (small, big)] == [3, 1]
    assert ckpt.load(PLAN_STAGE) == {"chunk@0": 3, "chunk@1": 1}
    again = Checkpoints(job_id, ckpt.token, None, every_s=3600)    # a later run; fits chosen in the other order
    assert [fit_image(img, c, [0, 1, 2], ckpt=again).chunk for c in (big, small)] == [3, 1]
    assert [fit_image(img, c, [0, 1, 2]).chunk for c in (big, small)] == [1, 3]      # their own choices


def test_a_finished_stage_is_not_trained_again(monkeypatch, caplog):
    """With a checkpoint after every epoch, a stop during the CNN (stage 1) resumes the CNN; the FCN (stage 0)
    is restored from its final checkpoint, its curve replayed, not retrained."""
    monkeypatch.setenv("L335Q_LEASE_S", "0.3")
    monkeypatch.setenv("L335Q_CHECKPOINT_S", "0")
    _, (job_id,) = create_submission(CLS)
    run_until_stopped(job_id, 1, 1)
    with session_scope() as s:
        steps = dict(s.execute(select(Checkpoint.stage, Checkpoint.step).where(Checkpoint.job_id == job_id)).all())
    assert steps[0] == CLS["epochs"] and 1 <= steps[1] <= CLS["epochs"]
    caplog.clear()
    with caplog.at_level("INFO", logger="l335q.job"):
        assert execute_job(job_id) == "done"
    said = caplog.text
    assert f"seed 3 fcn: resumed from a checkpoint after {CLS['epochs']} epochs" in said
    assert "seed 3 fcn: epoch" not in said                   # no FCN epoch trained again
    assert f"seed 3 cnn: epoch {CLS['epochs']}/{CLS['epochs']}" in said
    assert {n for _, _, n, _ in numbers(job_id)} >= {"fcn/train_acc", "cnn/test_acc"}
