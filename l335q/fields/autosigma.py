"""Automatic σ for Gaussian Fourier features, chosen from the training pixels alone.

``choose_sigma(coords, rgb, cfg, ...)`` receives the pixels a fit trains on and nothing else: held-out
pixels cannot influence it because they never reach it (``auto_sigma`` splits the image first and passes
the training half only; ``tests/test_fields_complete.py`` changes the held-out pixels and gets the same σ).

The method, a validation split inside the training pixels and a search over log σ:
  1. split: the training pixels lie on a lattice (every pixel for split ``all``, [::2, ::2] for
     ``every-other``); a checkerboard over that lattice fits on the (i + j) even half and validates on
     the odd half, and then the other way round (validation PSNR: the mean of the two);
  2. σ = lo, lo·2^(1/4), lo·2^(1/2), ... up to hi (default: a quarter of the training lattice's side,
     where most features reach its Nyquist frequency; no image measured had its held-out best above it);
  3. the choice is the LARGEST σ whose validation PSNR is within ``tol_db`` (0.4 dB) of the best. Why
     the largest: a validation pixel is a whole lattice step from the fit pixels around it, a held-out
     pixel only half a step, so validation punishes the fine detail of a large σ harder than held-out
     scoring does; among σ that validate about equally well, held-out pixels favour the largest. This
     also copes with bimodal validation curves (hubble: blurred point sources validate almost as well
     as sharp ones on the checkerboard, but not on held-out pixels).
Every trial fits the same seed, so trials differ in σ only (B = σ·B₀ with the same B₀ and weights).

How the rule and its tolerance were chosen, and what no rule that sees only the training pixels can do
(an image and its "bilinear twin" share those pixels, so they get the same σ, yet for some images no σ is
within 0.3 dB of the grid's best on both): research/autosigma.md. Results therefore carry
``loss_vs_best_db`` beside the choice, and the ffn-sigma summary weighs a miss against seed noise.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Search:
    lo: float = 0.25               # smallest σ tried
    hi: float | None = None        # largest σ tried (None: a quarter of the training lattice's side, see cap)
    ratio: float = 2 ** 0.25       # step between the σ tried, as a factor (four per octave)
    steps: int | None = None       # steps per trial fit (None: the configuration's own)
    folds: int = 2                 # 1: fit on the even half only; 2: also the odd half, validation PSNRs averaged
    tol_db: float = 0.4            # the largest σ whose validation PSNR is within this of the best wins


@dataclass
class SigmaChoice:
    sigma: float                   # the choice
    validated: float = 0.0         # the σ with the best validation PSNR (the choice is the largest close to it)
    trials: list[tuple[float, float | None]] = field(default_factory=list)   # (σ, validation PSNR) in order tried
    fit_pixels: int = 0
    val_pixels: int = 0
    folds: int = 1                 # fits per σ tried
    seconds: float = 0.0

    def text(self) -> str:
        return (f"auto σ = {self.sigma:g} ({len(self.trials)} σ tried, {self.folds} fit(s) each on the training "
                f"pixels, {self.seconds:.1f} s)")

    def as_dict(self) -> dict:
        return {"sigma": self.sigma, "validated": self.validated, "trials": [[s, p] for s, p in self.trials],
                "fit_pixels": self.fit_pixels, "val_pixels": self.val_pixels, "folds": self.folds,
                "seconds": round(self.seconds, 3)}


def lattice_index(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column and row of each pixel on the lattice its coordinates form (ranks of its x and y)."""
    col = np.unique(coords[:, 0], return_inverse=True)[1]
    row = np.unique(coords[:, 1], return_inverse=True)[1]
    return col.ravel(), row.ravel()


def checkerboard(coords: np.ndarray) -> np.ndarray:
    """For pixels on a (possibly sparse) lattice: True where lattice column + lattice row is even."""
    col, row = lattice_index(coords)
    return (col + row) % 2 == 0


def cap(coords: np.ndarray) -> float:
    """Largest σ worth trying: a quarter of the lattice's side in pixels, half its Nyquist frequency (n / 2
    cycles per unit for n pixels a side). Per axis 95 % of the frequencies b ~ N(0, σ²) lie within 2σ, so
    at this σ they reach Nyquist."""
    return min(len(np.unique(coords[:, 0])), len(np.unique(coords[:, 1]))) / 4.0


def sigma_lattice(lo: float, hi: float, ratio: float) -> list[float]:
    """lo, lo·ratio, lo·ratio², ... up to hi (at least lo)."""
    n = max(1, int(math.floor(math.log(max(hi, lo) / lo) / math.log(ratio) + 1e-9)) + 1)
    return [lo * ratio**k for k in range(n)]


def pick_sigma(score, sigmas: list[float], tol_db: float) -> tuple[float, float]:
    """(chosen σ, best-validating σ): the largest σ whose score is within tol_db of the best score."""
    best = max(sigmas, key=score)
    return max(s for s in sigmas if score(s) >= score(best) - tol_db), best


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

    hi = search.hi if search.hi is not None else max(search.lo, cap(coords))
    chosen, best = pick_sigma(score, sigma_lattice(search.lo, hi, search.ratio), search.tol_db)
    return SigmaChoice(sigma=float(f"{chosen:.6g}"), validated=float(f"{best:.6g}"), trials=list(tried.items()),
                       fit_pixels=int(even.sum()), val_pixels=int((~even).sum()), folds=len(folds),
                       seconds=time.perf_counter() - t0)


def auto_sigma(img: np.ndarray, cfg, split: str, seed: int = 0, device: str = "cpu", search: Search = Search(),
               log=None) -> SigmaChoice:
    """σ for fitting ``img`` with ``split``: the held-out pixels are dropped here, before the choice."""
    from ..data.images import split_pixels

    (coords, rgb), _heldout = split_pixels(img, split)
    return choose_sigma(coords, rgb, cfg, seed=seed, device=device, search=search, log=log)
