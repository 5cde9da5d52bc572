"""Spec validation and expansion: good specs give the right jobs; bad ones exit 2 with one line naming the key
and leave the database untouched."""
from __future__ import annotations

import sys
from itertools import product
from pathlib import Path

import pytest
from sqlalchemy import func, select

from l335q import UserError
from l335q.db import Job, Submission, session_scope
from l335q.specs import SpecError, expand, load_spec_file, parse_seeds
from l335q.submit import create_submission

from conftest import l335q_cmd

TASK = "cls-compare"


def spec(**keys) -> dict:
    return {"task": TASK, **keys}


# ----------------------------------------------------------------------------- expansion

def test_defaults_are_filled_in():
    exp = expand(spec())
    assert len(exp.jobs) == 1
    job = exp.jobs[0]
    assert job["seeds"] == [0]
    assert (job["epochs"], job["batch_size"], job["lr"], job["optimizer"], job["device"]) == (10, 64, 1e-3, "adam", "auto")
    assert exp.spec["seeds"] == [0] and exp.spec["task"] == TASK


def test_lists_are_grid_axes_and_expand_to_the_cross_product():
    models, lrs, batches, seeds = ["cnn", "fcn"], [1e-3, 1e-2], [32, 64, 128], [4, 7]
    exp = expand({"task": "cls-sweep", "model": models, "lr": lrs, "batch_size": batches, "seeds": seeds, "epochs": 3})
    got = sorted((j["model"], j["lr"], j["batch_size"], tuple(j["seeds"])) for j in exp.jobs)
    assert got == sorted((m, lr, b, (s,)) for m, lr, b, s in product(models, lrs, batches, seeds))
    assert len(exp.jobs) == 24 and all(j["epochs"] == 3 for j in exp.jobs)
    assert exp.spec["lr"] == lrs and exp.spec["epochs"] == 3      # the stored spec keeps lists as lists


def test_a_key_that_is_no_grid_axis_takes_one_value():
    with pytest.raises(SpecError, match="spec key 'lr' takes one value, not a list"):
        expand(spec(lr=[1e-3, 1e-2]))


def test_numbers_are_normalised():
    job = expand(spec(lr=1, seeds=3)).jobs[0]
    assert job["lr"] == 1.0 and isinstance(job["lr"], float)
    assert job["seeds"] == [3]
    assert expand(spec(lr="1e-2")).jobs[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize("text, seeds", [
    ("0-99", list(range(100))),
    ("1,5,7", [1, 5, 7]),
    ("0-2, 10-11", [0, 1, 2, 10, 11]),
    ("42", [42]),
])
def test_seed_ranges(text, seeds):
    assert parse_seeds(text) == seeds
    assert [j["seeds"] for j in expand(spec(seeds=text)).jobs] == [[s] for s in seeds]


EXAMPLES_DIR = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES_DIR)))
def test_every_example_spec_is_valid(path):
    """The README points users at examples/: each must expand, as written, into jobs of its own task kind."""
    exp = expand(load_spec_file(path))
    assert exp.jobs and exp.spec["task"] in path.name


def test_seed_groups_split_seeds_into_jobs():
    groups = [j["seeds"] for j in expand(spec(seeds="0-6", seed_group=3)).jobs]
    assert groups == [[0, 1, 2], [3, 4, 5], [6]]
    grid = expand({"task": "cls-sweep", "seeds": "0-3", "seed_group": 2, "lr": [1e-3, 1e-2]}).jobs
    assert sorted((j["lr"], tuple(j["seeds"])) for j in grid) == \
        sorted(product([1e-3, 1e-2], [(0, 1), (2, 3)]))


def test_a_submission_stores_every_job_in_one_go():
    raw = {"task": "cls-sweep", "seeds": "0-4", "lr": [1e-3, 3e-3], "epochs": 1, "title": "grid"}
    sub_id, job_ids = create_submission(raw)
    with session_scope() as s:
        sub = s.get(Submission, sub_id)
        jobs = list(s.scalars(select(Job).where(Job.submission_id == sub_id).order_by(Job.id)))
        assert (sub.task, sub.title, sub.spec["seeds"]) == ("cls-sweep", "grid", [0, 1, 2, 3, 4])
        assert [j.id for j in jobs] == job_ids and len(jobs) == 10
        assert {(j.params["lr"], j.params["seeds"][0]) for j in jobs} == set(product([1e-3, 3e-3], range(5)))
        assert all(j.state == "queued" and j.attempts == 0 and j.task == "cls-sweep" for j in jobs)


# ----------------------------------------------------------------------------- bad specs

BAD = [
    # (spec file text, a word the one-line message must contain)
    ("task: cls-compare\nepoch: 3\n", "'epoch'"),                          # unknown key (typo)
    ("task: cls-compare\nepochs: ten\n", "'epochs'"),                      # wrong type
    ("task: cls-compare\nepochs: 2.5\n", "'epochs'"),
    ("task: cls-compare\nepochs: 0\n", "'epochs'"),                        # out of range
    ("task: cls-compare\nlr: -0.1\n", "'lr'"),
    ("task: cls-compare\nlr: .inf\n", "'lr'"),
    ("task: cls-sweep\nbatch_size: []\n", "'batch_size'"),                # empty list
    ("task: cls-compare\noptimizer: not-an-optimizer\n", "'optimizer'"),
    ("task: cls-compare\ndevice: 7\n", "'device'"),
    ("task: cls-compare\nseeds: 9-0\n", "'seeds'"),                        # bad seeds
    ("task: cls-compare\nseeds: a-b\n", "'seeds'"),
    ("task: cls-compare\nseeds: [1, 1]\n", "'seeds'"),
    ("task: cls-compare\nseeds: [-1]\n", "'seeds'"),
    ("task: cls-compare\nseeds: []\n", "'seeds'"),
    ("task: cls-compare\nseeds: true\n", "'seeds'"),
    ("task: cls-compare\nseed_group: 0\n", "'seed_group'"),
    ("task: cls-compare\ntitle: [1, 2]\n", "'title'"),
    ("epochs: 2\n", "'task'"),                                             # no task
    ("task: no-such-kind\n", "'task'"),
    ("task: cls-compare\nepochs: [1, 2\n", "not valid YAML"),              # not YAML
    ("- task: cls-compare\n", "mapping"),                                  # not a mapping
    ("", "mapping"),
    ('task: cls-compare\nseeds: "0-99999999"\n', "'seeds'"),              # far too many seeds: no hang
    ('task: cls-compare\nseeds: "0-60000,70000-150000"\n', "'seeds'"),
    ("task: inr-init\nimage: sample:doesnotexist\n", "'image'"),         # checked at submit time
    ("task: upsample\nimage: [sample:camera, sample:nope]\n", "'nope'"),
    ("task: cls-compare\nmax_attempts: 0\n", "'max_attempts'"),
    ("task: cls-compare\nmax_attempts: lots\n", "'max_attempts'"),
]


def submissions_in_db() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count()).select_from(Submission))


def run_cli(args, monkeypatch, capsys) -> tuple[int, str, str]:
    """The `l335q` console entry point, called in this process (the subprocess tests below do it for real)."""
    from l335q.cli.main import main

    monkeypatch.setattr(sys, "argv", ["l335q", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("text, word", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_spec_exits_2_with_one_line_naming_the_key(text, word, tmp_path, monkeypatch, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code, out, err = run_cli(["submit", path], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], err
    assert submissions_in_db() == 0


def test_missing_spec_file(tmp_path, monkeypatch, capsys):
    code, out, err = run_cli(["submit", tmp_path / "nope.yaml"], monkeypatch, capsys)
    assert code == 2 and err.strip() == f"error: spec file not found: {tmp_path / 'nope.yaml'}"
    assert submissions_in_db() == 0


def test_spec_errors_are_user_errors(tmp_path):
    with pytest.raises(SpecError) as info:
        expand(spec(lr=[0.1, "x"]))
    assert isinstance(info.value, UserError) and "'lr'" in str(info.value)
    binary = tmp_path / "spec.yaml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SpecError, match="not a text file"):
        load_spec_file(binary)


@pytest.mark.parametrize("text, word", [BAD[0], BAD[19]], ids=["unknown", "yaml"])
def test_console_script_no_traceback(text, word, tmp_path):
    """The real console script in a subprocess: exit 2, one line on stderr, nothing on stdout, no DB rows."""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    proc = l335q_cmd("submit", path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1 and word in proc.stderr
    assert "Traceback" not in proc.stderr
    assert submissions_in_db() == 0


def test_bad_spec_in_service_mode_touches_nothing(service_env, tmp_path):
    """In service mode a bad spec fails before the database or the broker is written to."""
    path = tmp_path / "spec.yaml"
    path.write_text("task: cls-compare\nseeds: 0-3\nbatch_size: -4\n")
    before = submissions_in_db()
    proc = l335q_cmd("submit", path, "--queue", service_env["L335Q_TEST_QUEUE"], env=service_env, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: spec key 'batch_size'"), proc.stderr
    assert submissions_in_db() == before
    import redis

    assert redis.Redis.from_url(service_env["L335Q_BROKER_URL"]).llen(service_env["L335Q_TEST_QUEUE"]) == 0
