"""What the neural-field task kinds ``inr-arch``, ``ffn-sigma`` and ``upsample`` share: their spec keys,
the FieldConfig of a job, ``sigma: auto`` resolved from the training pixels, per-seed metrics, and the pack key;
and what every field kind (``inr-init`` too) fits through: ``fit``, on the job's device and checkpoints, by the
engine's fast path where ``L335Q_FAST`` says (``auto``: on CUDA; default off; see ``config.fast_mode``).
Torch-free at import (a task's schema is built at submit time): the engine loads when a job runs."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from ..data.images import SPLITS
from ..optim import OPTIMIZERS
from ..specs import Key, SpecError
from .names import ACTIVATIONS, ENCODINGS, INITIALISERS, LOSSES, OUTPUTS, PRECISIONS

if TYPE_CHECKING:
    from .autosigma import SigmaChoice
    from .engine import FieldConfig, FitResult


PRECISION_KEY = Key(str, "fp32", choices=PRECISIONS, grid=False,
                    help="bf16: the training forward in bfloat16, faster on CPUs with AVX-512 BF16 (bench/RESULTS.md; close "
                         "to, not the same as, the fp32 numbers; one precision per submission)")


def field_keys(**defaults) -> dict[str, Key]:
    """Spec keys of a field fit; ``defaults`` overrides a key's default (a list default is a grid axis)."""
    keys = {
        "image": Key(str, "sample:astronaut", file=True, help="sample:<name>, or an image file stored with the submission"),
        "resolution": Key(int, 64, min=2, max=4096, help="square side the image is resized to"),
        "depth": Key(int, 4, min=1, max=64, help="linear layers"),
        "width": Key(int, 256, min=1, max=8192, help="hidden width"),
        "activation": Key(str, "relu", choices=ACTIVATIONS),
        "output": Key(str, "sigmoid", choices=OUTPUTS),
        "encoding": Key(str, "none", choices=ENCODINGS),
        "features": Key(int, 256, min=1, max=65536, help="m, Gaussian frequencies"),
        "sigma": Key(float, 10.0, min=1e-6, max=1e6, special=("auto",),
                     help="σ of the Gaussian features, or auto (chosen from the training pixels)"),
        "init": Key(str, "default", choices=INITIALISERS),
        "loss": Key(str, "mse", choices=LOSSES),
        "optimizer": Key(str, "adam", choices=OPTIMIZERS),
        "lr": Key(float, 1e-3, min=1e-12, max=1e3),
        "steps": Key(int, 1000, min=1, max=1_000_000),
        "split": Key(str, "all", choices=SPLITS, help="all: score every pixel; every-other: held-out PSNR"),
        "precision": PRECISION_KEY,
        "device": Key(str, "auto", grid=False, help="auto, cpu, cuda or cuda:N"),
    }
    for name, value in defaults.items():
        keys[name] = replace(keys[name], default=value)
    return keys


def check_auto(params: dict) -> None:
    """Cross-key check: ``sigma: auto`` only means something for Gaussian features."""
    if params.get("sigma") == "auto" and params.get("encoding", "gaussian") != "gaussian":
        raise SpecError(f"spec key 'sigma': auto needs encoding: gaussian (got encoding {params['encoding']!r})")


def field_config(params: dict, **over) -> FieldConfig:
    """The FieldConfig of a job's params (keys it lacks keep FieldConfig's defaults); σ auto is a placeholder."""
    from .engine import FieldConfig

    names = FieldConfig.__dataclass_fields__
    cfg = FieldConfig(**{k: v for k, v in params.items() if k in names and k != "sigma"}, **over)
    if params.get("sigma") not in (None, "auto"):
        cfg.sigma = float(params["sigma"])
    return cfg.check()


def resolve_sigma(img, cfg: FieldConfig, params: dict, split: str, ctx) -> tuple[FieldConfig, SigmaChoice | None]:
    """With ``sigma: auto``, choose σ from the training pixels of ``img`` (job's first seed); record the choice."""
    if params.get("sigma") != "auto":
        return cfg, None
    from .autosigma import auto_sigma

    choice = auto_sigma(img, cfg, split, seed=params["seeds"][0], device=ctx.device, log=ctx.log)
    ctx.log(choice.text())
    return replace(cfg, sigma=choice.sigma), choice


def fast_for(device: str) -> bool:
    """Whether a field job on ``device`` takes the engine's fast path (``L335Q_FAST``, ``config.fast_applies``)."""
    from ..config import fast_applies, fast_mode

    return fast_applies(fast_mode(), device)


def fit(img, cfg: FieldConfig, seeds: list[int], ctx, split: str = "all") -> FitResult:
    """THE fit of a field job: ``img`` on ``ctx``'s device with its checkpoints; the fast path per ``fast_for``
    (``FitResult.fast`` says whether it ran: the engine takes full-batch fits only)."""
    from .engine import fit_image

    return fit_image(img, cfg, seeds, ctx.device, split=split, ckpt=ctx.checkpoints, fast=fast_for(ctx.device))


def pack_key(params: dict) -> str | None:
    """A field job's shape for packing (``l335q.packing``): every param but the seeds; None (runs alone) with
    ``sigma: auto``, whose σ is chosen from the job's own first seed."""
    from ..packing import same_but_seeds

    return None if params.get("sigma") == "auto" else same_but_seeds(params)


def seed_metrics(ctx, name: str, seeds: list[int], values: list[float | None]) -> None:
    """One metric per seed; a diverged seed (None) is stored as null."""
    for seed, value in zip(seeds, values):
        ctx.metric(name, math.nan if value is None else value, seed=seed)


def varying(jobs, keys) -> list[str]:
    """The keys among ``keys`` whose value differs between jobs."""
    return [k for k in keys if len({str(j.params.get(k)) for j in jobs}) > 1]
