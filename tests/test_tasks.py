"""The task-kind contract (l335q/tasks/__init__.py) checked on every registered kind, and a Table that cannot
drop a row key unnoticed."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from l335q import UserError
from l335q.results import SubmissionData, Table, render
from l335q.optim import OPTIMIZERS
from l335q.specs import COMMON_KEYS, Key, Schema, expand
from l335q.tasks import KINDS, get_kind, submittable

TASKS_DIR = Path(__file__).resolve().parent.parent / "l335q" / "tasks"


def params_of(fn) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def test_every_kind_module_is_registered():
    modules = {f"l335q.tasks.{p.stem}" for p in TASKS_DIR.glob("*.py") if p.stem != "__init__"}
    assert modules == set(KINDS.values())


@pytest.mark.parametrize("name", sorted(KINDS))
def test_kind_keeps_the_contract(name):
    kind = get_kind(name)
    assert f"``{name}``" in kind.__doc__.splitlines()[0], "the docstring's first line names the kind"
    assert params_of(kind.results) == ["data"]
    plot = inspect.signature(kind.plot)
    assert params_of(kind.plot)[:2] == ["data", "out"]
    assert any(p.kind is p.VAR_KEYWORD for p in plot.parameters.values()), "plot takes **options"
    if not hasattr(kind, "SCHEMA"):                      # a view: nothing to run or submit
        assert not hasattr(kind, "run") and not hasattr(kind, "read_input")
        with pytest.raises(UserError, match="view"):
            submittable(name)
        return
    schema = kind.SCHEMA
    assert isinstance(schema, Schema)
    assert all(isinstance(k, Key) for k in schema.keys.values())
    assert not set(schema.keys) & set(COMMON_KEYS)
    assert schema.seeds_per_job is None or schema.seeds_per_job >= 1
    assert schema.check is None or params_of(schema.check) == ["params"]
    assert schema.prepare is None or len(params_of(schema.prepare)) == 1
    assert params_of(kind.run) == ["params", "ctx"]
    if "optimizer" in schema.keys:                      # one meaning per optimiser name in every kind
        assert schema.keys["optimizer"].choices == OPTIMIZERS
    exp = expand({"task": name, "seeds": [0, 1]})       # every default is a valid value of its own key
    assert exp.jobs and all(set(schema.keys) <= set(p) and p["seeds"] for p in exp.jobs)
    assert {s for p in exp.jobs for s in p["seeds"]} == {0, 1}
    if hasattr(kind, "read_input"):
        assert len(params_of(kind.read_input)) == 1
        with pytest.raises(UserError, match="not found"):
            kind.read_input("/nonexistent/picture.png")
        assert any(k.file for k in schema.keys.values()), "read_input reads what a file=True key names"
    table = kind.results(SubmissionData(id=1, task=name, title=None, spec=exp.spec, jobs=[]))
    assert isinstance(table, Table) and table.task == name and "seeds" in table.columns
    assert not any(r.get("seeds") for r in table.rows), "no jobs: no row rests on a seed"
    assert name in render(table)


def test_a_row_key_outside_columns_and_detail_raises():
    with pytest.raises(ValueError, match=r"\['psnr_sd'\]"):
        Table("t", ["image", "psnr"], [{"image": "a", "psnr": 1.0, "psnr_sd": 0.1}])
    table = Table("t", ["image", "psnr"], [{"image": "a", "psnr": 1.0}])
    table.rows.append({"image": "b", "psnr": 2.0, "seeds": 3})      # added after construction: render checks
    with pytest.raises(ValueError, match="seeds"):
        render(table)


def test_detail_keys_reach_json_only():
    rows = [{"image": "a", "psnr": 21.5, "per_seed": [21.0, 22.0]}]
    table = Table("t", ["image", "psnr"], rows, detail=["per_seed"])
    assert "per_seed" not in render(table) and "per_seed" not in render(table, "csv")
    assert render(table, "csv").splitlines() == ["image,psnr", "a,21.5"]
    assert json.loads(render(table, "json"))["rows"] == rows
