"""Experiment specs: schema, validation and expansion into jobs.

Conventions every task kind follows:
  * ``task`` names the kind, ``title`` is optional free text;
  * a list value is a grid axis: the spec expands to the cross product of its list values;
  * ``seeds`` is a list of ints or a range string like ``"0-99"`` (default ``[0]``);
  * a job gets ``seeds``, a list: one seed per job, or a group of them where the kind fits seeds batched.
Any problem raises ``SpecError`` (a ``UserError``) whose one-line message names the offending key.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import UserError

REQUIRED = object()
COMMON_KEYS = ("task", "title", "seeds", "seed_group", "max_attempts", "time_limit", "fresh")
MAX_JOBS = 100_000
MAX_SEEDS = 100_000
MAX_ATTEMPTS = 100
MAX_TIME_LIMIT_S = 30 * 24 * 3600


class SpecError(UserError):
    pass


@dataclass(frozen=True)
class Key:
    """One spec key: its type, default, allowed values and whether a list makes it a grid axis."""
    type: type = float
    default: Any = REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    grid: bool = True
    nullable: bool = False
    special: tuple = ()           # extra literal values allowed beside the type (e.g. "auto")
    file: bool = False            # a path value is read at submit time and stored with the submission
    help: str = ""


@dataclass
class Schema:
    keys: dict[str, Key]
    seeds_per_job: int | None = 1     # None: all of a cell's seeds in one job; N: groups of at most N
    check: Callable[[dict], None] | None = None   # cross-key checks on one expanded job
    prepare: Callable[[dict], dict] | None = None  # rewrites the raw spec before expansion (e.g. adds a grid value)


def parse_seeds(value) -> list[int]:
    if value is None:
        return [0]
    if isinstance(value, bool):
        raise SpecError("spec key 'seeds': expected a list of integers or a range like \"0-99\"")
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        seeds: list[int] = []
        for part in value.replace(" ", "").split(","):
            a, sep, b = part.partition("-")
            try:
                lo, hi = int(a), int(b) if sep else int(a)
            except ValueError:
                raise SpecError(f"spec key 'seeds': cannot read {value!r} (use e.g. \"0-99\" or \"1,5,7\")") from None
            if hi < lo:
                raise SpecError(f"spec key 'seeds': range {part!r} runs backwards")
            if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                raise SpecError(f"spec key 'seeds': {value!r} is more than the limit of {MAX_SEEDS:,} seeds "
                                "per submission (split the grid into several submissions)")
            seeds.extend(range(lo, hi + 1))
        value = seeds
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        raise SpecError("spec key 'seeds': expected a non-empty list of integers or a range like \"0-99\"")
    if any(s < 0 for s in value):
        raise SpecError("spec key 'seeds': seeds must be >= 0")
    if len(value) > MAX_SEEDS:
        raise SpecError(f"spec key 'seeds': {len(value):,} seeds, more than the limit of {MAX_SEEDS:,} per submission")
    if len(set(value)) != len(value):
        raise SpecError("spec key 'seeds': a seed is listed twice")
    return value


def _check_value(name: str, key: Key, value):
    where = f"spec key {name!r}"
    if value is None:
        if key.nullable:
            return None
        raise SpecError(f"{where}: a value is required")
    if isinstance(value, str) and value in key.special:
        return value
    if key.type is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise SpecError(f"{where}: expected a number, got {value!r}") from None
            else:
                raise SpecError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(f"{where}: expected a finite number, got {value!r}")
    elif key.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
    elif key.type is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where}: expected true or false, got {value!r}")
    elif key.type is str:
        if not isinstance(value, str):
            raise SpecError(f"{where}: expected text, got {value!r}")
    if key.choices is not None and value not in key.choices:
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(map(str, key.choices))}")
    if key.min is not None and value < key.min:
        raise SpecError(f"{where}: {value!r} is below the minimum {key.min}")
    if key.max is not None and value > key.max:
        raise SpecError(f"{where}: {value!r} is above the maximum {key.max}")
    return value


@dataclass
class Expanded:
    task: str
    title: str | None
    spec: dict                      # the normalised spec (defaults filled, seeds as a list)
    jobs: list[dict] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)   # value -> path, for keys with file=True
    max_attempts: int | None = None   # worker losses a job survives (None: the worker's setting)
    time_limit_s: float | None = None  # seconds a job may run (None: the worker's L335Q_TIME_LIMIT_S, if any)
    fresh: bool = False                # recompute every seed (no reuse of earlier results, l335q.reuse)


def load_spec_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"spec file {path} is not valid YAML{at}") from None
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path} is not a text file") from None
    if not isinstance(data, dict):
        raise SpecError(f"spec file {path}: expected a mapping of keys to values at the top level")
    return data


def expand(raw: dict, base_dir: Path | None = None) -> Expanded:
    """Validate a spec mapping and expand it into job parameter dicts (cross product of list values)."""
    from .tasks import submittable

    if "task" not in raw:
        raise SpecError("spec key 'task' is missing (it names the task kind)")
    kind = submittable(raw["task"])
    schema: Schema = kind.SCHEMA
    unknown = [k for k in raw if k not in schema.keys and k not in COMMON_KEYS]
    if not unknown and schema.prepare:
        raw = schema.prepare(dict(raw))
    if unknown:
        raise SpecError(f"spec key {unknown[0]!r} is unknown for task {raw['task']!r} "
                        f"(known: {', '.join(sorted(schema.keys))})")
    title = raw.get("title")
    if title is not None and not isinstance(title, str):
        raise SpecError("spec key 'title': expected text")
    seeds = parse_seeds(raw.get("seeds"))
    group = raw.get("seed_group", schema.seeds_per_job)
    if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 1):
        raise SpecError("spec key 'seed_group': expected a positive integer")

    attempts = raw.get("max_attempts")
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int)
                                 or not 1 <= attempts <= MAX_ATTEMPTS):
        raise SpecError(f"spec key 'max_attempts': expected an integer from 1 to {MAX_ATTEMPTS}, got {attempts!r}")
    limit = raw.get("time_limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not 0 < limit <= MAX_TIME_LIMIT_S):
        raise SpecError(f"spec key 'time_limit': expected seconds, more than 0 and at most {MAX_TIME_LIMIT_S:,} "
                        f"(30 days), got {limit!r}")

    fresh = raw.get("fresh", False)
    if not isinstance(fresh, bool):
        raise SpecError(f"spec key 'fresh': expected true or false, got {fresh!r}")

    axes: dict[str, list] = {}
    files: dict[str, Path] = {}
    for name, key in schema.keys.items():
        value = raw.get(name, key.default)
        if value is REQUIRED:
            raise SpecError(f"spec key {name!r} is required for task {raw['task']!r}")
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list):
            if not key.grid:
                raise SpecError(f"spec key {name!r} takes one value, not a list")
            if not value:
                raise SpecError(f"spec key {name!r}: an empty list gives no jobs")
        checked = [_check_value(name, key, v) for v in values]
        if key.file:
            for v in checked:
                if isinstance(v, str) and v.startswith("sample:"):
                    check_sample(name, v)
                elif isinstance(v, str) and not v.startswith("upload:"):
                    p = Path(v) if Path(v).is_absolute() or base_dir is None else base_dir / v
                    if not p.is_file():
                        raise SpecError(f"spec key {name!r}: file not found: {v}")
                    files[v] = p
        axes[name] = checked

    cells = list(itertools.product(*axes.values()))
    groups = [seeds] if group is None else [seeds[i:i + group] for i in range(0, len(seeds), group)]
    if len(cells) * len(groups) > MAX_JOBS:
        raise SpecError(f"spec expands to {len(cells) * len(groups):,} jobs, more than the limit {MAX_JOBS:,}")
    jobs = []
    for cell in cells:
        params = dict(zip(axes, cell))
        if schema.check:
            schema.check(params)
        for g in groups:
            jobs.append({**params, "seeds": list(g)})
    spec = {"task": raw["task"], **({"title": title} if title else {}), "seeds": seeds,
            **({"max_attempts": attempts} if attempts is not None else {}),
            **({"time_limit": limit} if limit is not None else {}), **({"fresh": True} if fresh else {}),
            **{k: (v if isinstance(raw.get(k, schema.keys[k].default), list) else v[0]) for k, v in axes.items()}}
    return Expanded(task=raw["task"], title=title, spec=spec, jobs=jobs, files=files, max_attempts=attempts,
                    time_limit_s=None if limit is None else float(limit), fresh=fresh)


def check_sample(name: str, value: str) -> None:
    """A ``sample:<name>`` value must name a bundled sample (checked at submit time, not when the job runs)."""
    from .data.images import SAMPLES

    sample = value.removeprefix("sample:")
    if sample not in SAMPLES:
        raise SpecError(f"spec key {name!r}: unknown sample image {sample!r} (known: {', '.join(SAMPLES)})")
