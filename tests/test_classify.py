"""Classification: parameter arithmetic, the real Fashion-MNIST files, the training engine, cls-compare end to end
(embedded mode, real CLI), diagnosis wording and feature maps. Tiny subsets keep it fast on 2 CPU cores."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml

from l335q.classify import diagnosis, features
from l335q.classify.engine import TrainConfig, train
from l335q.classify.models import (DEFAULT_CNN, FCN_PARAMS, CNNConfig, build_model, count_params, format_table,
                                   param_table)
from l335q.data import fashion_mnist
from tests.conftest import l335q_cmd

torch.set_num_threads(2)
RESULT_KEYS = {"model", "params", "seeds", "train_acc_mean", "train_acc_sd", "test_acc_mean", "test_acc_sd", "gap",
               "diagnosis"}


def tiny(train_n=512, test_n=256):
    data = fashion_mnist.load("cpu", train_n)
    data.x_test, data.y_test = data.x_test[:test_n], data.y_test[:test_n]
    return data


# ----------------------------------------------------------------------------- models

def test_fcn_has_exactly_the_quickstart_parameter_count():
    assert count_params(build_model("fcn")) == 669_706 == FCN_PARAMS


@pytest.mark.parametrize("cfg", [DEFAULT_CNN, CNNConfig(batchnorm=False), CNNConfig(kernels=(5, 3, 3), hidden=300)])
def test_param_table_rows_add_up_to_the_real_count(cfg):
    model = build_model("cnn", cfg)
    rows = param_table(model)
    assert sum(r["params"] for r in rows) == sum(p.numel() for p in model.parameters())
    for r in rows:   # each formula evaluates to its count: "a·b·c + d"
        assert eval(r["formula"].replace("·", "*")) == r["params"], r
    assert format_table(rows)[-1].split()[-1] == f"{count_params(model):,}"


def test_default_cnn_is_three_conv_two_fc_within_the_budget():
    model = build_model("cnn")
    kinds = [type(m).__name__ for m in model.modules()]
    assert kinds.count("Conv2d") == 3 and kinds.count("Linear") == 2
    assert abs(count_params(model) / FCN_PARAMS - 1) <= 0.015          # the practical's ±1.5 %
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_params_command_prints_the_arithmetic_of_both_models():
    out = l335q_cmd("params", check=True).stdout
    for r in param_table(build_model("cnn")):        # whatever DEFAULT_CNN is, each of its layers is shown
        assert re.search(rf"{r['layer']}\s+{re.escape(r['formula'])}\s+=\s+{r['params']:,}", out), r
    assert "669,706" in out and DEFAULT_CNN.describe() in out
    js = json.loads(l335q_cmd("params", "--format", "json", check=True).stdout)
    assert js["fcn"]["total"] == 669_706
    assert sum(r["params"] for r in js["cnn"]["layers"]) == js["cnn"]["total"] == count_params(build_model("cnn"))


# ----------------------------------------------------------------------------- data and engine

def test_loader_reads_the_real_debian_fashion_mnist_files():
    (xtr, ytr, xte, yte), source = fashion_mnist.load_raw()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28) and xtr.dtype == torch.uint8
    assert sorted(ytr.unique().tolist()) == list(range(10)) == sorted(yte.unique().tolist())
    data = fashion_mnist.load("cpu", 100)
    assert data.x_train.shape == (100, 1, 28, 28) and 0.0 <= data.x_train.min() < data.x_train.max() <= 1.0
    assert torch.equal(data.y_train, ytr[:100])


def test_loader_names_every_place_it_looked_when_nothing_is_found(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "_RAW", {})
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("L335Q_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")     # offline for certain
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.raises(fashion_mnist.UserError) as err:
        fashion_mnist.load_raw()
    msg = str(err.value)
    assert "no-data" in msg and "no-debian" in msg and "download" in msg and "\n" not in msg


def test_engine_is_deterministic_on_cpu():
    data = tiny()
    cfg = TrainConfig(epochs=2, batch_size=64, seed=3)
    a = train(build_model("fcn", seed=3), data, cfg, log_fn=lambda m: None)
    b = train(build_model("fcn", seed=3), data, cfg, log_fn=lambda m: None)
    c = train(build_model("fcn", seed=4), data, TrainConfig(epochs=2, batch_size=64, seed=4), log_fn=lambda m: None)
    strip = lambda h: [(e.train_acc, e.test_acc, e.train_loss, e.test_loss) for e in h.epochs]  # noqa: E731
    assert strip(a) == strip(b) and len(a.epochs) == 2
    assert strip(a) != strip(c)
    assert a.final.train_acc > 0.3     # it learned something from 512 images


# ----------------------------------------------------------------------------- cls-compare end to end

def write_spec(tmp_path, **keys):
    spec = {"task": "cls-compare", "seeds": [0], "epochs": 1, "train_subset": 512, "test_subset": 256,
            "device": "cpu", **keys}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_absurd_learning_rate_is_stored_as_diverged(tmp_path):
    from l335q.db import Job, Metric, session_scope
    from l335q.runner import execute_job
    from l335q.specs import load_spec_file
    from l335q.submit import create_submission

    sub, jobs = create_submission(load_spec_file(write_spec(tmp_path, lr=1e6, optimizer="sgd", test_subset=64)))
    assert execute_job(jobs[0]) == "diverged"
    with session_scope() as s:
        job = s.get(Job, jobs[0])
        names = {m.name: m.value for m in s.query(Metric).filter_by(job_id=job.id)}
        assert job.state == "diverged" and names["fcn/diverged_at"] == 1
    table = json.loads(l335q_cmd("results", "--task", "cls-compare", "--format", "json", check=True).stdout)
    assert {r["model"]: r["diverged"] for r in table["rows"]}["fcn"] == 1


def test_submit_results_json_and_plot_in_embedded_mode(tmp_path):
    spec = write_spec(tmp_path, seeds=[0, 1], train_subset=256, test_subset=128)
    proc = l335q_cmd("submit", spec, check=True)
    assert "2 done" in proc.stderr
    table = json.loads(l335q_cmd("results", "--task", "cls-compare", "--format", "json", check=True).stdout)
    assert table["task"] == "cls-compare" and [r["model"] for r in table["rows"]] == ["fcn", "cnn"]
    for row in table["rows"]:
        assert RESULT_KEYS <= set(row)
        assert row["seeds"] == 2 and 0.0 < row["test_acc_mean"] <= 1.0 and row["test_acc_sd"] >= 0.0
        assert row["gap"] == pytest.approx(row["train_acc_mean"] - row["test_acc_mean"])
        assert row["diagnosis"] in ("failed to learn", "under-fitted", "well-fitted", "over-fitted")
    assert table["rows"][0]["params"] == 669_706
    text = l335q_cmd("results", "--task", "cls-compare", check=True).stdout
    assert "fcn" in text and "cnn" in text and "CNN − FCN" in text
    out = tmp_path / "cmp.png"
    l335q_cmd("plot", "--task", "cls-compare", "--out", out, check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # feature maps of the CNN job: stored images, and the cls-features view from the stored weights
    images = l335q_cmd("images", "--job", 1, "--out", tmp_path / "imgs", check=True).stdout.split()
    assert sorted(p.rsplit("/", 1)[-1] for p in images) == [f"features_conv{i}.png" for i in (1, 2, 3)]
    view = tmp_path / "maps.png"
    l335q_cmd("plot", "--task", "cls-features", "--job", 2, "--samples", "0,5", "--out", view, check=True)
    assert view.stat().st_size > 1000
    bad = l335q_cmd("plot", "--task", "cls-features", "--job", 1, "--samples", "99999", "--out", view)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- diagnosis and feature maps

def test_diagnosis_words_follow_the_numbers():
    over = diagnosis.diagnose([0.80, 0.90, 0.95, 0.97, 0.98], [0.78, 0.86, 0.88, 0.885, 0.89])
    well = diagnosis.diagnose([0.80, 0.90, 0.92, 0.925, 0.926], [0.78, 0.90, 0.905, 0.906, 0.907])
    under = diagnosis.diagnose([0.50, 0.60, 0.70, 0.75, 0.80], [0.50, 0.60, 0.69, 0.74, 0.79])
    failed = diagnosis.diagnose([0.10, 0.10, 0.11], [0.10, 0.10, 0.10])
    falling = diagnosis.diagnose([0.90, 0.92, 0.93, 0.94, 0.95], [0.93, 0.93, 0.925, 0.92, 0.92])
    assert [d.verdict for d in (over, well, under, failed, falling)] == \
        ["over-fitted", "well-fitted", "under-fitted", "failed to learn", "over-fitted"]
    assert "9.0 points" in over.sentence() and "1.9 points" in well.sentence()
    assert over.remedies != under.remedies and "falling" in falling.sentence()
    # move one number across a stated threshold and the verdict moves with it
    gap = diagnosis.GAP_OVERFIT
    edge = diagnosis.diagnose([0.95, 0.95], [0.95 - gap + 0.001, 0.95 - gap + 0.001])
    past = diagnosis.diagnose([0.95, 0.95], [0.95 - gap - 0.001, 0.95 - gap - 0.001])
    assert (edge.verdict, past.verdict) == ("well-fitted", "over-fitted")


def test_one_feature_map_image_per_conv_layer_with_its_channel_count():
    class Ctx:
        artifacts = []

        def artifact(self, name, data, media_type="image/png", seed=None, meta=None):
            self.artifacts.append((name, data, media_type, meta))

    cfg = CNNConfig(channels=(4, 6, 8), hidden=16)
    model = build_model("cnn", cfg, seed=0)
    data = tiny(64, 200)
    ctx = Ctx()
    features.store_cnn(ctx, model, data, seed=0)
    pngs = {n: (d, m) for n, d, t, m in ctx.artifacts if t == "image/png"}
    assert sorted(pngs) == ["features/conv1.png", "features/conv2.png", "features/conv3.png"]
    for i, channels in enumerate(cfg.channels, start=1):
        png, meta = pngs[f"features/conv{i}.png"]
        assert png[:4] == b"\x89PNG" and meta["maps"] == channels and meta["samples"] == 10
        assert sorted(data.y_test[meta["test_indices"]].tolist()) == list(range(10))
    # the mosaic holds exactly one tile per channel
    maps = features.layer_maps(model, data.x_test[:1])["conv2"][0]
    tile = features.mosaic(maps, columns=4)
    h, w = maps.shape[1:]
    cells = [tile[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] for r in range(2) for c in range(4)]
    assert sum(not np.isnan(c).all() for c in cells if c.size) == 6
    # the stored weights load back with weights_only=True and give the same outputs
    weights = next(d for n, d, t, m in ctx.artifacts if t == "application/octet-stream")
    meta = next(m for n, d, t, m in ctx.artifacts if t == "application/octet-stream")
    again = features.load_cnn(weights, meta["config"])
    model.eval()
    assert torch.equal(again(data.x_test[:5]), model(data.x_test[:5]))
    assert re.fullmatch(r"conv\d", again.conv_names()[0])
