"""Never compute the same cell twice: a result key per job, the seeds already measured under it, their rows copied.

A job's **result key** is what determines its numbers apart from its seeds: the task kind, its params without
``seeds`` (a stored file appears as ``upload:<sha256>`` of its bytes, a bundled image as ``sample:<name>``; the
device asked for and ``precision`` are params, so a ``cpu`` result never stands in for a ``cuda`` one) and the
version of the code that computes them: one number per engine family (``fields``, ``classify``) in
``l335q/versions.json``, with the SHA-256 of the family's files it was recorded for. ``tests/test_reuse.py`` fails
when those files change and no new version was recorded (``python -m l335q.reuse --bump`` records one).

``submit`` looks every (cell, seed) up among ``done`` jobs with the same key (failed, diverged or cancelled ones
are never used): a job of the new submission whose seeds were all measured goes in ``done`` at once, its metric
rows (and the images of its seeds) copied from the earlier jobs, its ``result`` saying where they came from
(``reused_from``); a job some of whose seeds were measured is split in two, the reused seeds as such a done job
and the others queued (a seed group shrinks). Tables, plots and reports then read the new submission as if it
had run everything. ``fresh: true`` in a spec (``l335q submit --fresh``) recomputes everything.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sqlalchemy import insert, literal, or_, select
from sqlalchemy.orm import Session

from .db import Artifact, Job, Metric

PACKAGE = Path(__file__).resolve().parent
VERSIONS_FILE = PACKAGE / "versions.json"
# engine family -> the files (relative to the package) whose code decides its numbers
FAMILIES = {
    "fields": ["fields/*.py", "optim.py", "data/images.py", "packing.py"],
    "classify": ["classify/*.py", "optim.py", "data/fashion_mnist.py"],
}
FAMILY_OF = {"inr-init": "fields", "inr-arch": "fields", "ffn-sigma": "fields", "upsample": "fields",
             "cls-compare": "classify", "cls-sweep": "classify", "cls-design": "classify"}


def files_sha(family: str) -> str:
    """SHA-256 over the family's files (sorted by path; each path and its bytes)."""
    h = hashlib.sha256()
    for pattern in FAMILIES[family]:
        for path in sorted(PACKAGE.glob(pattern)):
            h.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=1)
def recorded() -> dict[str, list[dict]]:
    """family -> [{"version", "sha256"}, ...], oldest first, as ``versions.json`` holds them."""
    return json.loads(VERSIONS_FILE.read_text())


def version(task: str) -> str:
    family = FAMILY_OF.get(task)
    return f"{family}/{recorded()[family][-1]['version']}" if family else "none"


def result_key(task: str, params: dict) -> str:
    """The key of a job's results: task kind, params without ``seeds``, its engine family's version."""
    cell = {k: v for k, v in params.items() if k != "seeds"}
    blob = json.dumps({"task": task, "params": cell, "version": version(task)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# ----------------------------------------------------------------------------- finding and copying


@dataclass
class Source:
    """Where a seed's rows come from: the done job that measured it (and that job's submission)."""
    job_id: int
    submission_id: int


@dataclass
class Split:
    """One job of a spec, after the lookup: the seeds reused (seed -> source) and the seeds to run."""
    params: dict
    key: str
    reused: dict[int, Source] = field(default_factory=dict)
    to_run: list[int] = field(default_factory=list)


def lookup(s: Session, keys: set[str]) -> dict[str, dict[int, Source]]:
    """key -> {seed: the first done job that measured it} over every done job with one of ``keys``."""
    found: dict[str, dict[int, Source]] = {}
    keys_ = sorted(keys)
    for i in range(0, len(keys_), 500):
        q = (select(Job.id, Job.submission_id, Job.result_key, Job.params)
             .where(Job.result_key.in_(keys_[i:i + 500]), Job.state == "done").order_by(Job.id))
        for job_id, sub_id, key, params in s.execute(q):
            seeds = found.setdefault(key, {})
            for seed in params.get("seeds") or []:
                seeds.setdefault(seed, Source(job_id, sub_id))
    return found


def split(s: Session, task: str, jobs: list[dict], fresh: bool = False) -> list[Split]:
    """Each job's params with its key, its seeds found done under that key (none when ``fresh``) and the rest."""
    keyed = [(p, result_key(task, p)) for p in jobs]
    found = {} if fresh else lookup(s, {k for _, k in keyed})
    out = []
    for params, key in keyed:
        have = found.get(key, {})
        out.append(Split(params, key, {seed: have[seed] for seed in params["seeds"] if seed in have},
                         [seed for seed in params["seeds"] if seed not in have]))
    return out


def provenance(reused: dict[int, Source]) -> dict:
    """A reused job's ``result``: where its seeds' rows came from."""
    subs = sorted({src.submission_id for src in reused.values()})
    return {"reused_from": {"submissions": subs, "jobs": sorted({src.job_id for src in reused.values()}),
                            "seeds": len(reused)},
            "note": f"reused from submission{'s' if len(subs) > 1 else ''} {', '.join(map(str, subs))}"}


def copy_rows(s: Session, job_id: int, submission_id: int, reused: dict[int, Source]) -> None:
    """Copy the metric rows and the images of the reused seeds into job ``job_id`` (INSERT ... SELECT: the
    bytes never leave the database); a source job whose every seed is reused also gives its seedless rows."""
    by_job: dict[int, list[int]] = {}
    for seed, src in reused.items():
        by_job.setdefault(src.job_id, []).append(seed)
    for src, seeds in by_job.items():
        src_seeds = set(s.scalar(select(Job.params).where(Job.id == src)).get("seeds") or [])
        whole = src_seeds <= set(seeds)
        which = or_(Metric.seed.in_(seeds), Metric.seed.is_(None)) if whole else Metric.seed.in_(seeds)
        cols = ["job_id", "seed", "step", "name", "value"]
        s.execute(insert(Metric).from_select(cols, select(literal(job_id), Metric.seed, Metric.step, Metric.name,
                                                          Metric.value).where(Metric.job_id == src, which)
                                             .order_by(Metric.id)))
        which = or_(Artifact.seed.in_(seeds), Artifact.seed.is_(None)) if whole else Artifact.seed.in_(seeds)
        cols = ["submission_id", "job_id", "name", "media_type", "sha256", "size", "seed", "meta", "data",
                "created_at"]
        s.execute(insert(Artifact).from_select(cols, select(
            literal(submission_id), literal(job_id), Artifact.name, Artifact.media_type, Artifact.sha256,
            Artifact.size, Artifact.seed, Artifact.meta, Artifact.data, Artifact.created_at)
            .where(Artifact.job_id == src, which).order_by(Artifact.id)))


# ----------------------------------------------------------------------------- recording versions


def stale() -> list[str]:
    """Families whose files changed since their last recorded version."""
    have = recorded()
    return [f for f in FAMILIES if f not in have or have[f][-1]["sha256"] != files_sha(f)]


def bump() -> list[str]:
    """Record a new version for every family whose files changed; returns what it bumped."""
    have = json.loads(VERSIONS_FILE.read_text()) if VERSIONS_FILE.exists() else {}
    changed = [f for f in FAMILIES if f not in have or have[f][-1]["sha256"] != files_sha(f)]
    for f in changed:
        have.setdefault(f, []).append({"version": (have[f][-1]["version"] + 1) if have.get(f) else 1,
                                       "sha256": files_sha(f)})
    VERSIONS_FILE.write_text(json.dumps(have, indent=1) + "\n")
    recorded.cache_clear()
    return changed


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--bump"]:
        sys.exit("usage: python -m l335q.reuse --bump   (after changing a training engine's numbers)")
    print("bumped:", ", ".join(bump()) or "nothing (no engine file changed)")
