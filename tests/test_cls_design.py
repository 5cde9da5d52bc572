"""cls-design: designs x seeds as jobs through the real embedded service path (CLI submit, results, plot), the
budget check at submit time, proposals from the designer, and summary words that follow the numbers."""
from __future__ import annotations

import json

import pytest
import yaml

from l335q.classify.design import TOLERANCE, count
from l335q.classify.models import DEFAULT_CNN, FCN_PARAMS, CNNConfig
from l335q.specs import SpecError, expand
from l335q.tasks import cls_design

from conftest import l335q_cmd

OTHER = {"channels": [16, 32, 64], "kernels": [3, 3, 3], "pools": [2, 2, 2]}    # hidden solved for the budget
COLUMNS = {"design", "default", "params", "off_budget", "mflops", "seeds", "test_acc_mean", "test_acc_sd",
           "train_acc_mean", "gap", "rank"}


def write(tmp_path, **keys):
    spec = {"task": "cls-design", "designs": [OTHER], "seeds": [0], "epochs": 1, "train_subset": 512,
            "test_subset": 256, "device": "cpu", **keys}
    path = tmp_path / "design.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_designs_one_seed_through_the_service(tmp_path, one_cpu_thread):
    proc = l335q_cmd("submit", write(tmp_path), check=True)
    assert "2 done" in proc.stderr
    table = json.loads(l335q_cmd("results", "--task", "cls-design", "--format", "json", check=True).stdout)
    rows = table["rows"]
    assert len(rows) == 2 and COLUMNS <= set(rows[0])
    assert sorted(r["rank"] for r in rows) == [1, 2]
    assert [r["test_acc_mean"] for r in rows] == sorted((r["test_acc_mean"] for r in rows), reverse=True)
    default = next(r for r in rows if r["default"])
    other = next(r for r in rows if not r["default"])
    assert CNNConfig.from_dict(default["config"]) == DEFAULT_CNN and default["params"] == count(DEFAULT_CNN)[0]
    solved = CNNConfig.from_dict(other["config"])
    assert solved.channels == (16, 32, 64) and other["design"] == solved.label()
    for r in rows:
        assert abs(r["off_budget"]) <= TOLERANCE and r["seeds"] == 1 and r["test_acc_sd"] == 0.0
        assert 0.1 < r["test_acc_mean"] <= 1.0 and r["epochs"] == 1
        assert r["gap"] == pytest.approx(r["train_acc_mean"] - r["test_acc_mean"])
        assert r["mflops"] == pytest.approx(count(CNNConfig.from_dict(r["config"]))[1] / 1e6)
    best = rows[0]["design"]
    summary = table["summary"]
    assert summary[0].startswith(f"Best design: {best} ")
    if rows[0]["default"]:
        assert "ranks first" in summary[1]
    else:
        assert "fewer than 2 seeds" in summary[1]
    assert "proxy run" in summary[-1] and "epochs 1" in summary[-1]
    text = l335q_cmd("results", "--task", "cls-design", "--table", check=True).stdout
    assert other["design"] in text and "Best design" in text
    out = tmp_path / "design.png"
    l335q_cmd("plot", "--task", "cls-design", "--out", out, check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_out_of_budget_design_is_refused_by_name(tmp_path):
    proc = l335q_cmd("submit", write(tmp_path, designs=[OTHER, {"channels": [32, 64, 128], "pools": [2, 2, 2], "hidden": 600}]))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "entry 2" in proc.stderr and "32-64-128 k3-3-3 p2-2-2 h600" in proc.stderr and "±1.5 %" in proc.stderr
    for bad, words in [({"channels": [256, 256, 256], "kernels": [7, 7, 7]}, "off the FCN"),
                       ({"chanels": [8, 8, 8]}, "unknown setting 'chanels'"),
                       ({"channels": [8, 8]}, "three integers"), ("wide", "expected a mapping")]:
        with pytest.raises(SpecError, match=words):
            expand({"task": "cls-design", "designs": [bad]})


def test_propose_adds_the_cheapest_designs_after_the_default():
    spec = expand({"task": "cls-design", "designs": [OTHER], "propose": 2}).spec
    configs = [CNNConfig.from_dict(d) for d in spec["designs"]]
    assert configs[0] == DEFAULT_CNN and configs[1].channels == (16, 32, 64) and len(configs) == 4
    assert count(configs[2])[1] <= count(configs[3])[1]
    assert all(abs(count(c)[0] / FCN_PARAMS - 1) <= TOLERANCE for c in configs)
    again = expand({"task": "cls-design", "designs": [DEFAULT_CNN.to_dict()]}).jobs     # listed twice: run once
    assert len(again) == 1


def row(name, acc, sd, seeds, default=False, mflops=16.0):
    return {"design": name, "default": default, "params": FCN_PARAMS, "mflops": mflops, "cost_vs_default": 1.0,
            "seeds": seeds, "test_acc_mean": acc, "test_acc_sd": sd, "rank": None}


@pytest.mark.parametrize("sd, more", [(0.001, True), (0.008, False)])   # 2 SE: 0.13 and 0.72 points
def test_summary_words_follow_the_numbers(sd, more):
    rows = [row("a", 0.927, sd, 5), row("ref", 0.922, 0.001, 5, default=True), row("b", 0.921, 0.001, 5)]
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    full = dict(cls_design.PRACTICAL)
    lines = cls_design.summarise(rows, full)
    assert lines[0].startswith("Best design: a ") and "+0.50 points ahead" in lines[1]
    assert (": more than 2 standard errors" in lines[1]) is more
    assert (": not more than 2 standard errors" in lines[1]) is not more
    assert ("1 of 2 (a)" if more else "0 of 2.") in lines[1]
    assert lines[2].startswith("At the practical's settings") and "1 of 3 designs reach" in lines[2]
    rows[0]["test_acc_mean"] = 0.924
    assert "falls short by 0.10 points" in cls_design.summarise(rows, full)[2]
    assert "proxy run (epochs 2" in cls_design.summarise(rows, {**full, "epochs": 2})[2]
