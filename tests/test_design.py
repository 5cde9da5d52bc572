"""`l335q design`: every design within budget, its printed arithmetic is the built model's real count,
cls-compare's CNN is among the answers for the FCN's 669,706, and the JSON has the promised shape."""
from __future__ import annotations

import json
import re

import pytest

from l335q import UserError
from l335q.classify import design as ds
from l335q.classify.models import DEFAULT_CNN, FCN_PARAMS, CNNConfig, build_model, count_params, param_table

from conftest import l335q_cmd

SETTINGS = {"params", "channels", "kernels", "pools", "same_padding", "hidden", "batchnorm", "dropout", "flops", "rank"}


@pytest.mark.parametrize("budget", [FCN_PARAMS, 120_000])
def test_every_design_is_within_budget_and_counted_right(budget):
    found = ds.search(budget)
    assert len(found) > 20
    assert all(abs(d.params - budget) <= ds.TOLERANCE * budget for d in found)
    assert [d.flops for d in found] == sorted(d.flops for d in found)
    for d in ds.spread(found, 25):          # cheap to costly: built for real, counted for real
        model = build_model("cnn", d.config, seed=0)
        assert count_params(model) == d.params
        assert sum(r["params"] for r in param_table(model)) == d.params
        assert ds.MIN_HIDDEN <= d.config.hidden <= d.config.flat_features


def test_the_hidden_width_is_solved_not_searched():
    cfg = DEFAULT_CNN
    for h in (cfg.hidden - 1, cfg.hidden + 1):          # the neighbours are further from the budget
        assert abs(ds.count(cfg, h)[0] - FCN_PARAMS) > abs(ds.count(cfg)[0] - FCN_PARAMS)
    assert ds.rank_of(ds.search(FCN_PARAMS), DEFAULT_CNN) is not None
    off = abs(ds.count(cfg)[0] - FCN_PARAMS) / FCN_PARAMS
    assert ds.rank_of(ds.search(FCN_PARAMS, tolerance=1.01 * off), DEFAULT_CNN) is not None
    if off > 0:                                         # a tolerance tighter than its own offset leaves it out
        assert ds.rank_of(ds.search(FCN_PARAMS, tolerance=off / 2), DEFAULT_CNN) is None


def test_flops_count_a_conv_layer_by_hand():
    cfg = CNNConfig(channels=(4, 8, 8), kernels=(3, 3, 3), pools=(2, 2, 1), same_padding=True, hidden=32,
                    batchnorm=False)
    # conv1 4·28·28·9, conv2 8·14·14·36, conv3 8·7·7·72, fc1 392·32, fc2 32·10 multiply-adds
    macs = 4 * 784 * 9 + 8 * 196 * 36 + 8 * 49 * 72 + 392 * 32 + 32 * 10
    assert ds.count(cfg) == (count_params(build_model("cnn", cfg)), 2 * macs)


def arithmetic(text: str) -> tuple[list[tuple[str, int, int]], int]:
    """From the printed table: (layer, value of its formula, printed count) per layer, and the printed total."""
    rows, total = [], None
    lines = text.splitlines()
    for ln in lines[lines.index("design #1, layer by layer (built model, real parameter count):") + 1:]:
        if ln.startswith("total"):
            total = int(ln.split()[-1].replace(",", ""))
            continue
        name, formula, count = re.fullmatch(r"(\w+)\s+(.+?)\s+=\s+([\d,]+)", ln).groups()
        value = sum(eval("*".join(term.split("·"))) for term in formula.split(" + "))   # digits and · only
        rows.append((name, value, int(count.replace(",", ""))))
    return rows, total


def test_printed_arithmetic_adds_up_to_the_built_models_count():
    budget = 250_000
    out = l335q_cmd("design", "--budget", budget, "--conv", 3, "--fc", 2, "--top", 3, check=True).stdout
    best = json.loads(l335q_cmd("design", "--budget", budget, "--format", "json", "--top", 1, check=True).stdout)[0]
    real = count_params(build_model("cnn", CNNConfig.from_dict(best)))
    rows, total = arithmetic(out)
    assert [r[0] for r in rows] == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "fc1", "fc2"]
    assert all(value == count for _, value, count in rows)
    assert sum(count for _, _, count in rows) == total == real == best["params"]
    assert abs(real - budget) <= ds.TOLERANCE * budget


def test_json_answers_include_cls_compares_cnn():
    answers = json.loads(l335q_cmd("design", "--budget", FCN_PARAMS, "--conv", 3, "--fc", 2, "--format", "json",
                                   check=True).stdout)
    at = ds.rank_of(ds.search(FCN_PARAMS), DEFAULT_CNN)           # top 10 + cls-compare's CNN at its rank
    assert isinstance(answers, list) and len(answers) == 10 + (at > 10)
    assert all(SETTINGS <= set(a) for a in answers)
    assert [a["rank"] for a in answers[:10]] == list(range(1, 11)) and answers[-1]["rank"] == max(at, 10)
    default = [a for a in answers if a["default_cnn"]]
    assert len(default) == 1 and CNNConfig.from_dict(default[0]) == DEFAULT_CNN
    assert default[0]["params"] == count_params(build_model("cnn"))
    for a in answers:
        assert abs(a["params"] - FCN_PARAMS) <= ds.TOLERANCE * FCN_PARAMS
        assert count_params(build_model("cnn", CNNConfig.from_dict(a))) == a["params"]


def test_bad_requests_are_one_line_errors():
    proc = l335q_cmd("design", "--conv", "4")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    with pytest.raises(UserError, match="too small"):
        ds.designs_for(500)
    with pytest.raises(UserError, match="no 3-conv"):
        ds.designs_for(FCN_PARAMS, max_flops=1000)


def test_a_probe_trains_through_the_engine_and_ranks_by_accuracy():
    designs = ds.spread([d for d in ds.search(20_000) if d.flops <= 3e6], 2)
    ranked = ds.probe(designs, steps=16, train_images=512, test_images=300)
    accs = [d.probe_acc for d in ranked]
    assert sorted(d.config.describe() for d in ranked) == sorted(d.config.describe() for d in designs)
    assert all(a is not None and 0.0 <= a <= 1.0 for a in accs) and accs == sorted(accs, reverse=True)
    assert max(accs) > 0.3                                 # they did learn something
