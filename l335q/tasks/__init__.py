"""Task kinds: one module per kind, imported lazily (a kind's heavy imports load only when used).

A kind module defines
  SCHEMA                         specs.Schema: its keys, defaults and ranges
  run(params, ctx) -> None       the job: a pure function of params (with ``seeds``) and data;
                                 writes through ctx.metric / ctx.artifact, may set ctx.state = "diverged"
  results(data) -> Table         data: results.SubmissionData; the rows users see
  plot(data, out, **options)     a matplotlib figure written to ``out``
Kinds without SCHEMA (e.g. ``cls-features``) are views for ``plot``/``results`` only.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .. import UserError

KINDS = {
    "cls-compare": "l335q.tasks.cls_compare",
    "cls-sweep": "l335q.tasks.cls_sweep",
    "cls-features": "l335q.tasks.cls_features",
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
