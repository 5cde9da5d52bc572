"""Task kinds: one module per kind, registered in ``KINDS`` and imported lazily (a kind's heavy imports load
only when it is used).

The contract of a kind module (tests/test_tasks.py walks ``KINDS`` and checks it):
  SCHEMA                        specs.Schema: its spec keys (specs.Key: type, default, range, grid axis or not),
                                how many seeds one job fits (``seeds_per_job``), and two optional hooks:
                                  check(params)       cross-key checks on one expanded job (raises SpecError)
                                  prepare(raw) -> raw rewrites the raw spec before expansion (ffn-sigma adds σ auto)
  run(params, ctx) -> None      one job: a pure function of params (with ``seeds``) and the data; writes through
                                ctx.metric / ctx.artifact / ctx.log, may fill ctx.summary and set
                                ctx.state = "diverged"; reads files stored with the submission via ctx.input_bytes;
                                runs on ctx.device and hands ctx.checkpoints to the training engine (resume)
  results(data) -> Table        data: results.SubmissionData; one row per cell of finished jobs, with summary lines
                                computed from the rows; every row key is a column or a declared JSON-only detail
  plot(data, out, **options)    a matplotlib figure written to ``out``
  run_packed(jobs, ctxs)        optional: jobs of one shape (params equal but ``seeds``) as one batched run, each
                                context getting what ``run`` writes for its job (``l335q.packing``); a kind with
                                it is packed by workers, and may define pack_key(params) -> str | None (None: alone)
  read_input(path) -> bytes     optional, submit time: the bytes of a file a ``file=True`` key names, after
                                validating them (without it: the file's bytes as they are)
A module without SCHEMA is a view (``cls-features``): ``results``/``plot`` over other kinds' jobs, no ``run``;
it cannot be submitted.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .. import UserError

KINDS = {
    "cls-compare": "l335q.tasks.cls_compare",
    "cls-sweep": "l335q.tasks.cls_sweep",
    "cls-features": "l335q.tasks.cls_features",
    "cls-design": "l335q.tasks.cls_design",
    "inr-init": "l335q.tasks.inr_init",
    "inr-arch": "l335q.tasks.inr_arch",
    "ffn-sigma": "l335q.tasks.ffn_sigma",
    "upsample": "l335q.tasks.upsample",
}


def get_kind(name, where: str = "spec key 'task'") -> ModuleType:
    if not isinstance(name, str) or name not in KINDS:
        raise UserError(f"{where}: unknown task kind {name!r} (known: {', '.join(KINDS)})")
    try:
        return importlib.import_module(KINDS[name])
    except ModuleNotFoundError as exc:
        if exc.name == KINDS[name]:
            raise UserError(f"task kind {name!r} is not implemented in this version") from None
        raise


def submittable(name) -> ModuleType:
    kind = get_kind(name)
    if not hasattr(kind, "SCHEMA"):
        raise UserError(f"task kind {name!r} is a view of other tasks' results, not something to submit")
    return kind
