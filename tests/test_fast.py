"""The fast (GPU) paths on the CPU: the same code without CUDA graphs gives the plain loops' numbers,
and bench/gpu.py runs end to end at tiny sizes without the service's packages."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from l335q import UserError
from l335q.checkpoints import Checkpoints, Interrupted, Stage, dumps, loads
from l335q.classify.engine import TrainConfig, evaluate, train, uses_fused
from l335q.classify.fused import evaluate_fused, fuse, train_fused, unfuse
from l335q.classify.fused import per_seed_loss as fused_loss
from l335q.classify.models import CNNConfig, build_model
from l335q.data import fashion_mnist
from l335q.data.images import load_image, resize
from l335q.config import fast_mode
from l335q.fields.engine import FieldConfig, fit_image
from l335q.runner import execute_job
from l335q.submit import create_submission
from job_rows import numbers

ROOT = Path(__file__).resolve().parent.parent
SMALL_CNN = CNNConfig(channels=(4, 8, 8), hidden=32, dropout=0.0)


@pytest.fixture(scope="module")
def data():
    d = fashion_mnist.load("cpu")
    return SimpleNamespace(x_train=d.x_train[:160], y_train=d.y_train[:160], x_test=d.x_test[:96], y_test=d.y_test[:96])


def plain_and_fused(data, name, cnn_config, cfg, seeds):
    fused_models = [build_model(name, cnn_config, seed=s) for s in seeds]
    fused = train_fused(fused_models, data, cfg, seeds)
    plain_models = [build_model(name, cnn_config, seed=s) for s in seeds]
    plain = [train(m, data, TrainConfig(**{**cfg.__dict__, "seed": s}), log_fn=lambda _: None)
             for m, s in zip(plain_models, seeds)]
    return fused, plain, fused_models, plain_models


@pytest.mark.parametrize("name,cnn_config,optimizer", [("fcn", None, "adam"), ("cnn", SMALL_CNN, "sgd-momentum")])
def test_fused_seeds_train_as_the_plain_loop(data, name, cnn_config, optimizer, one_cpu_thread):
    # (the CNN with SGD: under Adam its conv biases, whose true gradient is 0 before BatchNorm, follow rounding
    # noise at full step size, which no two summation orders share)
    cfg = TrainConfig(epochs=2, batch_size=48, lr=0.01 if optimizer != "adam" else 1e-3, optimizer=optimizer)
    fused, plain, fm, pm = plain_and_fused(data, name, cnn_config, cfg, [3, 7])
    for hf, hp in zip(fused, plain):
        assert len(hf.epochs) == len(hp.epochs) == 2
        for ef, ep in zip(hf.epochs, hp.epochs):
            assert ef.train_acc == pytest.approx(ep.train_acc, abs=1.01 / 160)
            assert ef.test_acc == pytest.approx(ep.test_acc, abs=1.01 / 96)
            assert ef.train_loss == pytest.approx(ep.train_loss, abs=1e-4)
            assert ef.test_loss == pytest.approx(ep.test_loss, abs=1e-4)
    # train_fused copies the trained weights back. On the CPU both loops run a CNN channels-last, so a grouped
    # convolution sums as each seed's own does; what is left is FusedLinear's batched product (baddbmm) against
    # nn.Linear's addmm: after 16 steps the weights (of scale 0.1-1) differ by < 5e-6 (measured on one thread;
    # with a contiguous fused model it was ~2e-3, and with 2 threads the grouped convolution's backward splits
    # its sums otherwise: ~2e-4). Another seed's weights differ by ~1e-1.
    for a, b in zip(fm, pm):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(va.float(), vb.float(), rtol=0, atol=1e-5), k
    assert fused[0].epochs[-1].test_loss != fused[1].epochs[-1].test_loss     # the seeds are not one model


class MemoryCheckpoints(Checkpoints):
    """``Checkpoints`` whose rows are kept in ``rows`` (serialised as the database stores them) instead of a
    job's table, and whose stages report a stop request at the ``stop_at``-th time the loop asks."""

    def __init__(self, rows: dict, stop_at: int | None = None):
        super().__init__(job_id=0, token="", url=None, every_s=3600)
        self.rows, self.stop_at, self.asked = rows, stop_at, 0

    def stage(self) -> Stage:
        owner = self

        class Asked(Stage):
            @property
            def stop_requested(self) -> bool:
                owner.asked += 1
                return owner.stop_at is not None and owner.asked >= owner.stop_at
        self._next += 1
        return Asked(self, self._next - 1)

    def load(self, stage):
        return loads(self.rows[stage]) if stage in self.rows else None

    def save(self, stage, step, state):
        self.rows[stage] = dumps(state)
        self.saves += 1


DROPOUT_CNN = CNNConfig(channels=(4, 8, 8), hidden=32, dropout=0.3)


def test_fused_training_stopped_anywhere_resumes_to_the_same_numbers(data, one_cpu_thread):
    """A stop request at every point the fused loop asks (between 2-step chunks, before the last short batch,
    at each epoch's end) saves a checkpoint and raises Interrupted; resumed from it, training ends with exactly the
    uninterrupted numbers and weights (dropout, BatchNorm, Adam, two seeds)."""
    cfg = TrainConfig(epochs=2, batch_size=48, lr=1e-3)      # 160 images: 3 steps of 48 + one of 16 per epoch
    seeds = [3, 7]

    def run(ckpt: MemoryCheckpoints):
        models = [build_model("cnn", DROPOUT_CNN, seed=s) for s in seeds]
        stage = ckpt.stage()
        epochs = []
        hs = train_fused(models, data, cfg, seeds, steps_per_graph=2, stage=stage, saved=stage.load(),
                         on_epoch=lambda s, e: epochs.append((s, e.epoch, e.train_acc, e.test_acc, e.train_loss,
                                                              e.test_loss)))
        return hs, epochs, [m.state_dict() for m in models]

    _, want, want_weights = run(MemoryCheckpoints({}))
    asks = MemoryCheckpoints({})
    run(asks)
    # per epoch: before steps 0 and 2 and before the short one, then at its end (the stop request, then due()):
    # a stop seen first by due() is saved there and caught again before the next epoch's first step
    assert asks.asked == 2 * 5
    for stop_at in range(1, asks.asked):
        rows = {}
        with pytest.raises(Interrupted):
            run(MemoryCheckpoints(rows, stop_at))
        saved = loads(rows[0])
        assert saved["fused"] == 2 and (saved["order"] is None) == (stop_at in (4, 9)), stop_at
        _, got, weights = run(MemoryCheckpoints(rows))
        assert got == want, stop_at              # replayed epochs first, then the trained ones
        for a, b in zip(weights, want_weights):
            assert all(torch.equal(a[k], b[k]) for k in a), stop_at


def test_l335q_fast_and_the_one_choice_of_loop(monkeypatch):
    for value, mode in [(None, "off"), ("auto", "auto"), ("1", "on"), ("On", "on"), ("true", "on"), ("0", "off"),
                        ("off", "off"), ("FALSE", "off")]:
        if value is None:
            monkeypatch.delenv("L335Q_FAST", raising=False)
        else:
            monkeypatch.setenv("L335Q_FAST", value)
        assert fast_mode() == mode, value
    monkeypatch.setenv("L335Q_FAST", "fast")
    with pytest.raises(UserError, match="L335Q_FAST"):
        fast_mode()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    choice = {(f, d.type): uses_fused(TrainConfig(fast=f), d) for f in ("auto", "on", "off") for d in (cpu, cuda)}
    assert [k for k, v in choice.items() if v] == [("auto", "cuda"), ("on", "cpu"), ("on", "cuda")]
    assert uses_fused(TrainConfig(fast="off"), cpu, {"fused": 1}) and not uses_fused(TrainConfig(fast="on"), cuda, {})
    with pytest.raises(ValueError):
        uses_fused(TrainConfig(fast=True), cpu)


CLS_JOB = {"task": "cls-compare", "fresh": True, "seeds": [0], "epochs": 1, "train_subset": 512, "test_subset": 256, "device": "cpu"}


def test_cls_job_with_l335q_fast_writes_the_plain_numbers(monkeypatch, caplog, one_cpu_thread):
    """A real cls-compare job (Quickstart FCN and the default CNN, Adam, 1 epoch) with L335Q_FAST=1 trains in the
    fused loop, eagerly on the CPU, and writes the metric rows of L335Q_FAST=0. With one seed the dropout masks are
    the same draws. The FCN's accuracies match to the image and its losses to float rounding. The CNN's gradients
    agree to ~3e-7, but under Adam its conv biases (true gradient 0 before BatchNorm, |grad| ~1e-7-1e-4) follow
    that rounding at full step size; BatchNorm cancels them in training, but its running means lag behind them, so
    the eval-mode numbers move a little: measured 1 training image of 512 and 4e-4 in the losses; asserted: at most
    3 images and 2e-3."""
    runs = {}
    for fast in ("0", "1"):
        monkeypatch.setenv("L335Q_FAST", fast)
        _, (job,) = create_submission(CLS_JOB)
        caplog.clear()
        with caplog.at_level("INFO", logger="l335q.job"):
            assert execute_job(job) == "done"
        loop = "fused" if "seed 0 cnn: epoch 1/1: test acc" in caplog.text else "plain"   # their epoch lines
        assert loop == {"0": "plain", "1": "fused"}[fast]
        runs[fast] = numbers(job)
    plain, fused = runs["0"], runs["1"]
    assert plain.keys() == fused.keys() and len(plain) == 2 * 5
    images = {"train": CLS_JOB["train_subset"], "test": CLS_JOB["test_subset"]}
    for key, v in plain.items():
        model, what = key[2].split("/")
        if what.endswith("_acc"):
            n = images[what.split("_")[0]]
            assert abs(round(fused[key] * n) - round(v * n)) <= (0 if model == "fcn" else 3), key
        elif what.endswith("_loss"):
            assert fused[key] == pytest.approx(v, abs=1e-5 if model == "fcn" else 2e-3), key
        else:
            assert fused[key] == v, key


def test_fuse_unfuse_and_fused_evaluation(data):
    models = [build_model("cnn", CNNConfig(channels=(4, 8, 8), hidden=32), seed=s) for s in (0, 1, 2)]
    for m in models:                               # BatchNorm statistics that are not the initial ones
        m.train()
        m(data.x_train[:64])
    fused = fuse(models)
    acc, loss = evaluate_fused(fused, data.x_test, data.y_test)
    for s, m in enumerate(models):
        a, l_ = evaluate(m, data.x_test, data.y_test)
        assert float(acc[s]) == pytest.approx(a, abs=1.01 / 96) and float(loss[s]) == pytest.approx(l_, abs=1e-5)
    copies = [build_model("cnn", CNNConfig(channels=(4, 8, 8), hidden=32), seed=9) for _ in models]
    unfuse(fused, copies)
    for a, b in zip(models, copies):
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(va, vb), k


def test_fused_seed_that_diverges_leaves_the_others(data):
    models = [build_model("fcn", seed=s) for s in (0, 1)]
    with torch.no_grad():
        models[1].fc3.weight.fill_(float("nan"))   # seed 1's loss is not finite from the first step
    hs = train_fused(models, data, TrainConfig(epochs=2, batch_size=64), [0, 1])
    assert hs[1].diverged_at == 1 and not hs[1].epochs
    alone = train(build_model("fcn", seed=0), data, TrainConfig(epochs=2, batch_size=64, seed=0), log_fn=lambda _: None)
    assert [e.test_acc for e in hs[0].epochs] == pytest.approx([e.test_acc for e in alone.epochs], abs=1.01 / 96)


@pytest.mark.parametrize("optimizer", ["adam", "sgd-momentum", "rmsprop"])
def test_warm_up_before_a_capture_changes_no_number(data, optimizer):
    """graphs.Steps warms up before each first capture (CUDA only), at the start or in mid-training: its
    parameters, buffers, optimiser state, extra tensors and the global RNG (dropout masks) must come back exactly
    as they were."""
    from l335q.graphs import Steps
    from l335q.optim import make_optimizer

    def run(warm_at):
        torch.manual_seed(0)
        model = fuse([build_model("cnn", DROPOUT_CNN, seed=s) for s in (0, 1)])
        opt = make_optimizer(optimizer, model.parameters(), 1e-3)
        total = torch.zeros(2)
        order = torch.Generator().manual_seed(5)

        def body(k):
            for _ in range(k):
                idx = torch.randint(len(data.x_train), (2, 16), generator=order)
                loss = fused_loss(model(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                total.add_(loss.detach())
        steps = Steps(body, [model], opt, graphs=False, tensors=(total,))
        for i in range(3):
            if i in warm_at:
                state = order.get_state()
                steps.warm_up()
                order.set_state(state)                 # the warm-up's own draws are not the training's
            steps.run(2)
        return model.state_dict(), total

    (a, ta), (b, tb) = run(()), run((0, 2))
    assert torch.equal(ta, tb) and all(torch.equal(a[k], b[k]) for k in a)


def test_fields_fast_path_gives_the_same_fit_on_the_cpu():
    img = resize(load_image("sample:astronaut"), 24)
    cfg = FieldConfig(encoding="gaussian", features=16, sigma=5.0, width=24, steps=70)
    plain = fit_image(img, cfg, [0, 1], "cpu", split="every-other", log_every=9)
    fast = fit_image(img, cfg, [0, 1], "cpu", split="every-other", log_every=9, fast=True)
    assert fast.train_psnr == plain.train_psnr and fast.heldout_psnr == plain.heldout_psnr
    assert fast.loss_steps == plain.loss_steps and fast.loss_curve == plain.loss_curve
    assert fast.loss_steps[-1] == 69 and plain.train_psnr[0] != plain.train_psnr[1]
    assert fast.fast is True and plain.fast is False
    assert fit_image(img, replace(cfg, batch_pixels=20, steps=2), [0], "cpu", fast=True).fast is False  # not sampled
    bf16 = fit_image(img, replace(cfg, precision="bf16"), [0, 1], "cpu", split="every-other", log_every=9, fast=True)
    assert bf16.train_psnr != plain.train_psnr
    assert bf16.train_psnr == pytest.approx(plain.train_psnr, abs=0.5)


BLOCK = "import sys\nfor m in ('sqlalchemy', 'celery', 'redis'): sys.modules[m] = None\n"


def test_gpu_bench_tiny_runs_without_the_service_packages(tmp_path):
    out = tmp_path / "gpu.json"
    code = BLOCK + (f"sys.argv = ['gpu.py', '--tiny', '--device', 'cpu', '--out', {str(out)!r}]\n"
                    f"import runpy; runpy.run_path({str(ROOT / 'bench' / 'gpu.py')!r}, run_name='__main__')\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert r["errors"] == {} and r["skipped"] == [] and r["device"] == "cpu" and r["torch"] == torch.__version__
    t = r["tancik"]
    for row in ("eager_fp32", "graphs_fp32", "graphs_tf32", "graphs_bf16"):
        assert t[row]["kind"] == "measured" and t[row]["seconds"] > 0 and t[row]["heldout_psnr"] > 5
    assert t["graphs_fp32"]["heldout_psnr_diff_db"] == 0.0        # on the CPU the fast path is the same fit
    assert "eager_tf32" not in t                                  # only when the graphs failed
    i = r["inr_init"]
    assert i["fits"] == 10 and i["fast"]["kind"] == "measured" and i["reference"]["kind"].startswith("extrapolated")
    assert len(i["psnr_fast_minus_single_db"]) == 1 and abs(i["psnr_fast_minus_single_db"][0]) < 0.05 and i["ratio"] > 0
    c = r["cls"]
    assert len(c["cells"]) == 8 and {x["batch_size"] for x in c["cells"]} == {4, 64, 512}
    assert c["cells"][-1]["batch_size"] == 4 and c["fast_kind"] == "measured"
    for cell in c["cells"]:
        assert cell["fast"]["kind"] == "measured" and cell["fast"]["epochs_run"] == 1
        assert cell["reference"]["kind"].startswith("extrapolated") and cell["ratio"] > 0
        assert len(cell["fast"]["test_acc"]) == 2
    assert c["ratio"] == pytest.approx(c["reference_seconds"] / c["fast_seconds"], rel=1e-2)
    assert r["accuracy"]["plain_engine_seed0"]["kind"] == "measured"
    for check in ("fcn_adam", "cnn_sgd-momentum"):
        diff = r["cls_check"][check]["max_abs_diff"]
        assert diff["train_loss"] < 1e-3 and diff["test_loss"] < 1e-3 and diff["test_acc"] <= 1.01 / 32
    assert "cls cls-sweep batch cnn lr 0.001 batch 4" in p.stdout
