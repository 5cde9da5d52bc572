"""How many seeds of a field fit train at once: the memory a seed needs, the device's room, the CPU's rule.

``fields.engine`` asks ``seed_chunk`` once per fit (recorded in the job's plan) and halves it when a chunk runs out
of memory anyway (``out_of_memory``): the estimate is rough, the device's other tenants unknown.
"""
from __future__ import annotations

import ctypes
import gc
import sys
from typing import TYPE_CHECKING

import torch

from .. import UserError

if TYPE_CHECKING:
    from .engine import FieldConfig

CPU_BUDGET_BYTES = 3 * 2**30      # working memory assumed on a CPU device
CPU_SOLO_WORK = 2**24             # pixels x width² of one seed from which a CPU fits seeds one by one (seed_chunk)


def bytes_per_seed(cfg: FieldConfig, pixels: int, in_dim: int) -> int:
    """Rough peak bytes one seed needs per step: activations kept for backward + parameters and their state."""
    acts = pixels * (3 * in_dim + 3 * cfg.width * max(cfg.depth - 1, 0) + 12)
    params = in_dim * cfg.width + cfg.width * cfg.width * max(cfg.depth - 2, 0) + 3 * cfg.width
    return 4 * (acts + 5 * params)


def seed_chunk(cfg: FieldConfig, n_seeds: int, pixels: int, device: str, in_dim: int,
               requested: int | None = None) -> int:
    """Seeds per batched model: ``requested``, by default all of them, but on a CPU one when a seed's own matmuls
    keep the cores busy (pixels x width² >= ``CPU_SOLO_WORK``; research/cpu_seed_batching.md: batched, such fits
    ran 1.2-1.3x slower on 2 threads); never more than fit in memory. The numbers are the same either way; the
    rule reads no thread count, so a job resumed on another worker splits its seeds as before."""
    if requested is None:
        solo = not str(device).startswith("cuda") and pixels * cfg.width ** 2 >= CPU_SOLO_WORK
        requested = 1 if solo else n_seeds
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = 0.7 * free
    else:
        budget = CPU_BUDGET_BYTES
    per = bytes_per_seed(cfg, pixels, in_dim)
    fit = int(budget // per)
    if fit < 1:
        raise UserError(f"one seed needs about {per / 2**30:.1f} GiB per step, more than the {budget / 2**30:.1f} GiB "
                        f"available on {device}: use batch_pixels, a smaller resolution or a smaller network")
    return max(1, min(requested, n_seeds, fit))


def out_of_memory(exc: BaseException) -> bool:
    """A CUDA or CPU allocation that failed (``torch.OutOfMemoryError``; the CPU allocator's RuntimeError)."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(exc)


def release(device: str) -> None:
    """Give back what a chunk that ran out of memory held before the fit starts again smaller: its tensors
    (cycles through the exception's frames collected), CUDA's cached blocks, and on Linux the C heap's free
    top (``malloc_trim``; glibc raises its mmap threshold after big frees, so freed tensors stay mapped)."""
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
