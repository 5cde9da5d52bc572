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
  4. the σ with the highest validation PSNR (mean over both checkerboard halves, each fitted and
     validated in turn) wins, scaled by √(training pixels / fit pixels) = √2: the fit half samples the
     plane √2 times more coarsely per axis than the training pixels do, and a σ suited to a sampling
     density scales with its linear density.
Measured with ``bench/autosigma.py`` (48 px, 3 x 96, m 96, 300 steps, 1 seed, σ grid 0.5 .. 20, 2-core CPU),
held-out PSNR lost against the grid's best σ, for the winner scaled by 1 / √2 / 2:
camera 0.19 / -0.16 / 0.02, astronaut 0.53 / 0.00 / 0.33, chelsea 1.21 / 0.38 / -0.13, grass 0.47 / 0.41 / 0.18,
sky -0.45 / -0.44 / 0.53, coffee 0.31 / -0.39 / 0.01, brick -0.28 / -0.20 / 0.09, gravel 0.05 / 0.10 / 0.26,
rocket 0.60 / 0.62 / -0.18, hubble 2.06 / 1.94 / 1.87 (point sources: the validation curve is bimodal).
√2 (the default) is within 0.3 dB on 6 of 10 and has the lowest mean loss; 2 on 7 of 10; none on all.
(Extrapolating from a second search at a quarter density instead did worse on these images.)
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
    folds: int = 2                 # 1: fit on the even half only; 2: also the odd half, validation PSNRs averaged
    scale: float | None = None     # the winner times this (None: √(training pixels / fit pixels) = √2)


@dataclass
class SigmaChoice:
    sigma: float                   # the choice
    validated: float = 0.0         # the σ with the best validation PSNR (before the density correction)
    trials: list[tuple[float, float | None]] = field(default_factory=list)   # (σ, validation PSNR) in order tried
    fit_pixels: int = 0
    val_pixels: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"sigma": self.sigma, "validated": self.validated, "trials": [[s, p] for s, p in self.trials],
                "fit_pixels": self.fit_pixels, "val_pixels": self.val_pixels, "seconds": round(self.seconds, 3)}


def lattice_index(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column and row of each pixel on the lattice its coordinates form (ranks of its x and y)."""
    col = np.unique(coords[:, 0], return_inverse=True)[1]
    row = np.unique(coords[:, 1], return_inverse=True)[1]
    return col.ravel(), row.ravel()


def checkerboard(coords: np.ndarray) -> np.ndarray:
    """For pixels on a (possibly sparse) lattice: True where lattice column + lattice row is even."""
    col, row = lattice_index(coords)
    return (col + row) % 2 == 0


def nyquist(coords: np.ndarray) -> float:
    """Highest frequency (cycles per unit) the lattice of these pixels resolves: half its side in pixels."""
    return min(len(np.unique(coords[:, 0])), len(np.unique(coords[:, 1]))) / 2.0


def coarse_sigmas(lo: float, hi: float, ratio: float) -> list[float]:
    n = max(1, int(math.floor(math.log(max(hi, lo) / lo) / math.log(ratio) + 1e-9)) + 1)
    return [lo * ratio**k for k in range(n)]


def _search(score, lo: float, hi: float, search: Search) -> float:
    """Coarse pass over lo, lo·ratio, ... hi, then ``refine`` halvings of the log step around the best."""
    best = max(coarse_sigmas(lo, hi, search.ratio), key=score)
    step = math.log(search.ratio)
    for _ in range(search.refine):
        step /= 2
        best = max([best, best * math.exp(-step), best * math.exp(step)], key=score)
    return best


def choose_sigma(coords, rgb, cfg, seed: int = 0, device: str = "cpu", search: Search = Search(),
                 log=None) -> SigmaChoice:
    """σ for ``cfg`` (a gaussian-encoding FieldConfig) from training pixels coords (N, 2), rgb (N, 3) only."""
    from .engine import fit_pixels

    coords, rgb = np.asarray(coords, np.float32), np.asarray(rgb, np.float32)
    even = checkerboard(coords)
    folds = [even, ~even][:max(1, search.folds)]
    trial_cfg = replace(cfg, encoding="gaussian", steps=search.steps or cfg.steps)
    tried: dict[float, float | None] = {}
    t0 = time.perf_counter()

    def score(sigma: float) -> float:
        """Validation PSNR at σ, averaged over the folds (each fits one half, validates on the other)."""
        sigma = float(f"{sigma:.6g}")
        if sigma not in tried:
            vals = [fit_pixels(coords[f], rgb[f], replace(trial_cfg, sigma=sigma), [seed], device,
                               evals={"val": (coords[~f], rgb[~f])}).eval_psnr["val"][0] for f in folds]
            tried[sigma] = None if None in vals else float(np.mean(vals))
            if log:
                log(f"auto σ: σ={sigma:g}: validation PSNR {tried[sigma]}")
        return -math.inf if tried[sigma] is None else tried[sigma]

    hi = search.hi if search.hi is not None else max(search.lo, nyquist(coords[even]))
    best = _search(score, search.lo, hi, search)
    scale = math.sqrt(len(coords) / even.sum()) if search.scale is None else search.scale
    return SigmaChoice(sigma=float(f"{best * scale:.6g}"), validated=float(f"{best:.6g}"), trials=list(tried.items()),
                       fit_pixels=int(even.sum()), val_pixels=int((~even).sum()), seconds=time.perf_counter() - t0)


def auto_sigma(img: np.ndarray, cfg, split: str, seed: int = 0, device: str = "cpu", search: Search = Search(),
               log=None) -> SigmaChoice:
    """σ for fitting ``img`` with ``split``: the held-out pixels are dropped here, before the choice."""
    from ..data.images import split_pixels

    (coords, rgb), _heldout = split_pixels(img, split)
    return choose_sigma(coords, rgb, cfg, seed=seed, device=device, search=search, log=log)
