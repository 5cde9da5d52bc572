"""Automatic σ for Gaussian Fourier features, chosen from the training pixels alone.

``choose_sigma(coords, rgb, cfg, ...)`` receives the pixels a fit trains on and nothing else: held-out
pixels cannot influence it because they never reach it (``auto_sigma`` splits the image first and passes
the training half only; ``tests/test_fields_complete.py`` changes the held-out pixels and gets the same σ).

The method, a validation split inside the training pixels and a coarse-to-fine search over log σ:
  1. split: the training pixels lie on a lattice (every pixel for split ``all``, [::2, ::2] for
     ``every-other``); a checkerboard over that lattice fits on the (i + j) even half and validates on
     the odd half, so every validation pixel sits between fit pixels, as held-out pixels sit between
     training pixels;
  2. coarse: validation PSNR at σ = lo, 2·lo, 4·lo, ... up to hi (default: the Nyquist frequency of the
     training lattice, n / 2 cycles per unit for n pixels a side — beyond it features alias);
  3. refine: around the best σ so far try σ·2^(±1/2), then σ·2^(±1/4) (``refine`` levels);
  4. the σ with the highest validation PSNR wins.
Every trial fits the same seed, so trials differ in σ only (B = σ·B₀ with the same B₀ and weights).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Search:
    lo: float = 0.5                # smallest σ tried
    hi: float | None = None        # largest σ of the coarse pass (None: Nyquist of the training lattice)
    ratio: float = 2.0             # coarse step, as a factor
    refine: int = 2                # halvings of the log step around the best σ
    steps: int | None = None       # steps per trial fit (None: the configuration's own)


@dataclass
class SigmaChoice:
    sigma: float
    trials: list[tuple[float, float | None]] = field(default_factory=list)   # (σ, validation PSNR) in order tried
    fit_pixels: int = 0
    val_pixels: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"sigma": self.sigma, "trials": [[s, p] for s, p in self.trials], "fit_pixels": self.fit_pixels,
                "val_pixels": self.val_pixels, "seconds": round(self.seconds, 3)}


def checkerboard(coords: np.ndarray) -> np.ndarray:
    """For pixels on a (possibly sparse) lattice: True where lattice column + lattice row is even."""
    col = np.unique(coords[:, 0], return_inverse=True)[1]
    row = np.unique(coords[:, 1], return_inverse=True)[1]
    return (col.ravel() + row.ravel()) % 2 == 0


def nyquist(coords: np.ndarray) -> float:
    """Highest frequency (cycles per unit) the lattice of these pixels resolves: half its side in pixels."""
    return min(len(np.unique(coords[:, 0])), len(np.unique(coords[:, 1]))) / 2.0


def coarse_sigmas(lo: float, hi: float, ratio: float) -> list[float]:
    n = max(1, int(math.floor(math.log(max(hi, lo) / lo) / math.log(ratio) + 1e-9)) + 1)
    return [lo * ratio**k for k in range(n)]


def choose_sigma(coords, rgb, cfg, seed: int = 0, device: str = "cpu", search: Search = Search(),
                 log=None) -> SigmaChoice:
    """σ for ``cfg`` (a gaussian-encoding FieldConfig) from training pixels coords (N, 2), rgb (N, 3) only."""
    from .engine import fit_pixels

    coords, rgb = np.asarray(coords, np.float32), np.asarray(rgb, np.float32)
    part = checkerboard(coords)
    fit_c, fit_v, val_c, val_v = coords[part], rgb[part], coords[~part], rgb[~part]
    trial_cfg = replace(cfg, encoding="gaussian", steps=search.steps or cfg.steps)
    t0 = time.perf_counter()
    tried: dict[float, float | None] = {}

    def score(sigma: float) -> float:
        sigma = float(f"{sigma:.6g}")
        if sigma not in tried:
            res = fit_pixels(fit_c, fit_v, replace(trial_cfg, sigma=sigma), [seed], device,
                             evals={"val": (val_c, val_v)})
            tried[sigma] = res.eval_psnr["val"][0]
            if log:
                log(f"auto σ: σ={sigma:g} validation PSNR {tried[sigma]}")
        v = tried[sigma]
        return -math.inf if v is None else v

    hi = search.hi if search.hi is not None else max(search.lo, nyquist(fit_c))
    best = max(coarse_sigmas(search.lo, hi, search.ratio), key=score)
    step = math.log(search.ratio)
    for _ in range(search.refine):
        step /= 2
        best = max([best, best * math.exp(-step), best * math.exp(step)], key=score)
    return SigmaChoice(sigma=float(f"{best:.6g}"), trials=list(tried.items()), fit_pixels=len(fit_c),
                       val_pixels=len(val_c), seconds=time.perf_counter() - t0)


def auto_sigma(img: np.ndarray, cfg, split: str, seed: int = 0, device: str = "cpu", search: Search = Search(),
               log=None) -> SigmaChoice:
    """σ for fitting ``img`` with ``split``: the held-out pixels are dropped here, before the choice."""
    from ..data.images import split_pixels

    (coords, rgb), _heldout = split_pixels(img, split)
    return choose_sigma(coords, rgb, cfg, seed=seed, device=device, search=search, log=log)
