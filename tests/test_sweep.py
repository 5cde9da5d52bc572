"""cls-sweep: the spec grid, the words computed from the rows, and a tiny real sweep on Fashion-MNIST."""
from __future__ import annotations

import json
from itertools import product

import pytest

from l335q.classify import sweep_summary as ss
from l335q.specs import SpecError, expand, load_spec_file

from conftest import ROOT, l335q_cmd


# ----------------------------------------------------------------------------- the grid

@pytest.mark.parametrize("name, lrs, batches", [
    ("cls-sweep-lr.yaml", [0.1, 0.001, 0.00001], [64]),
    ("cls-sweep-batch.yaml", [0.001], [4, 64, 512]),
])
def test_example_specs_expand_to_the_practicals_grids(name, lrs, batches):
    exp = expand(load_spec_file(ROOT / "examples" / name))
    got = sorted((j["model"], j["lr"], j["batch_size"], tuple(j["seeds"])) for j in exp.jobs)
    assert got == sorted(("cnn", lr, b, (s,)) for lr, b, s in product(lrs, batches, [0, 1, 2]))
    assert {(j["epochs"], j["optimizer"]) for j in exp.jobs} == {(10, "adam")}


def test_model_is_an_axis_too_and_defaults_to_the_cnn():
    exp = expand({"task": "cls-sweep", "lr": [0.01, 0.001], "seeds": "3-4"})
    assert sorted((j["model"], j["lr"], j["batch_size"], j["seeds"][0]) for j in exp.jobs) == \
        sorted(("cnn", lr, 64, s) for lr, s in product([0.01, 0.001], [3, 4]))
    exp = expand({"task": "cls-sweep", "model": ["cnn", "fcn"], "batch_size": [8, 16]})
    assert len(exp.jobs) == 4
    with pytest.raises(SpecError, match="'model'"):
        expand({"task": "cls-sweep", "model": "resnet"})


# ----------------------------------------------------------------------------- words from made-up rows

def seed(s, train, test, secs=1.0, diverged=False, curve=None):
    return {"seed": s, "train_acc": None if diverged else train, "test_acc": None if diverged else test,
            "diverged": diverged, "seconds_per_epoch": secs, "train_curve": curve or [train], "test_curve": [test]}


def row(lr, batch, seeds):
    ok = [s for s in seeds if not s["diverged"]]
    mean = lambda k: sum(s[k] for s in ok) / len(ok) if ok else None
    tr, te = mean("train_acc"), mean("test_acc")
    return {"model": "cnn", "lr": lr, "batch_size": batch, "seeds": len(ok), "train_acc_mean": tr, "train_acc_sd": 0.01,
            "test_acc_mean": te, "test_acc_sd": 0.01, "gap": None if tr is None else tr - te, "epochs_to_85": None,
            "seconds_per_epoch": sum(s["seconds_per_epoch"] for s in seeds) / len(seeds),
            "diverged": len(seeds) - len(ok), "per_seed": seeds}


def lr_rows(fast_test):
    """An lr sweep where lr=0.1 reaches ``fast_test`` in every seed."""
    return [row(0.1, 64, [seed(i, fast_test + 0.01, fast_test) for i in range(3)]),
            row(0.001, 64, [seed(i, 0.93, 0.90) for i in range(3)]),
            row(0.00001, 64, [seed(i, 0.72, 0.715) for i in range(3)])]


def line(summary, *words):
    hits = [s for s in summary if all(w in s for w in words)]
    assert len(hits) == 1, (words, summary)
    return hits[0]


def test_lr_words_follow_the_numbers():
    at_chance = ss.summarise(lr_rows(0.10))
    assert "lr=0.1 failed to learn" in line(at_chance, "failed to learn")
    assert "held: 3/3 seeds" in line(at_chance, '"lr=0.1 fails to learn')
    assert "lr=1e-05 learned slowly" in line(at_chance, "learned slowly")
    assert "held: 3/3" in line(at_chance, '"lr=1e-5: train and test')
    assert "best test accuracy 90.0 %" in line(at_chance, "best test")

    learning = ss.summarise(lr_rows(0.88))          # now lr=0.1 learns: the words must change
    assert not [s for s in learning if "failed to learn" in s]
    assert "did not hold: 0/3 seeds" in line(learning, '"lr=0.1 fails to learn')
    assert "lr=0.1 over-fitted" not in " ".join(at_chance)

    rows = lr_rows(0.10)                             # one seed of lr=0.1 diverges, one learns
    rows[0]["per_seed"][1] = seed(1, 0, 0, diverged=True)
    rows[0]["per_seed"][2] = seed(2, 0.80, 0.79)
    assert "held only partly: 2/3 seeds" in line(ss.summarise(rows), '"lr=0.1 fails to learn')
    rows[0] = row(0.1, 64, [seed(i, 0, 0, diverged=True) for i in range(3)])
    assert "diverged in 3 of 3 seeds" in line(ss.summarise(rows), "lr=0.1 failed to learn")


def batch_rows(gap4, secs4):
    return [row(0.001, 4, [seed(i, 0.90 + gap4, 0.90, secs4) for i in range(3)]),
            row(0.001, 64, [seed(i, 0.915, 0.90 - 0.001 * i, 2.0) for i in range(3)]),
            row(0.001, 512, [seed(i, 0.86, 0.857, 1.0, curve=[0.80, 0.82, 0.84, 0.86]) for i in range(3)])]


def test_batch_words_follow_the_numbers():
    a = ss.summarise(batch_rows(gap4=0.05, secs4=12.0))
    assert "batch 4 over-fitted most" in line(a, "over-fitted most")
    assert "12.0× the 1.00 s at batch 512" in line(a, "an epoch at batch 4 took 12.00 s")
    assert "held: 3/3" in line(a, '"smaller batches take much longer')
    assert "held: 3/3" in line(a, '"batch 4 over-fits more')
    assert "held: 3/3" in line(a, '"batch 512 gives lower accuracy')
    assert "held: 3/3" in line(a, '"batch 512 has not converged')
    assert "held only partly: 2/3" in line(a, '"batch 4 gives slightly better test')   # 0.90 vs 0.90, 0.899, 0.898

    b = ss.summarise(batch_rows(gap4=0.001, secs4=1.5))
    assert "batch 64 over-fitted most" in line(b, "over-fitted most")
    assert "did not hold: 0/3" in line(b, '"smaller batches take much longer')
    assert "did not hold: 0/3" in line(b, '"batch 4 over-fits more')


def test_no_sweep_no_claims():
    rows = [row(0.001, 64, [seed(0, 0.9, 0.88)])]
    assert ss.summarise(rows) == ["one setting only: nothing swept, no comparison to make."]
    assert ss.summarise([]) == []


# ----------------------------------------------------------------------------- a tiny real sweep

def test_tiny_real_sweep_adam_lr_0_1_fails_and_is_stored_so(tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("task: cls-sweep\nmodel: cnn\nlr: [0.1, 0.001]\nbatch_size: 64\nepochs: 2\n"
                    "train_subset: 1000\ntest_subset: 500\nseeds: [0]\ndevice: cpu\n")
    assert l335q_cmd("submit", spec, check=True).returncode == 0
    out = json.loads(l335q_cmd("results", "--task", "cls-sweep", "--format", "json", check=True).stdout)
    rows = {r["lr"]: r for r in out["rows"]}
    assert set(rows) == {0.1, 0.001}
    bad, good = rows[0.1], rows[0.001]
    failed = bad["diverged"] == 1 or bad["test_acc_mean"] <= ss.CHANCE + ss.NEAR_CHANCE
    assert failed, bad
    assert good["diverged"] == 0 and good["test_acc_mean"] > 0.6, good
    assert [s["seed"] for s in bad["per_seed"]] == [0] and len(good["per_seed"][0]["test_curve"]) == 2
    summary = " ".join(out["summary"])
    assert "lr=0.1 failed to learn" in summary and "lr=0.001 failed" not in summary
    assert 'claim "lr=0.1 fails to learn at all (random predictions)" — held: 1/1' in summary
    for key in ("model", "lr", "batch_size", "seeds", "train_acc_mean", "train_acc_sd", "test_acc_mean",
                "test_acc_sd", "gap", "epochs_to_85", "seconds_per_epoch", "diverged"):
        assert key in good
    table = l335q_cmd("results", "--task", "cls-sweep", check=True).stdout
    assert "lr=0.1 failed to learn" in table and "epochs_to_85" in table
    png = tmp_path / "sweep.png"
    l335q_cmd("plot", "--task", "cls-sweep", "--out", png, check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
