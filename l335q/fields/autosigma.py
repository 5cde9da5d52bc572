"""Automatic σ for Gaussian Fourier features, chosen from the training pixels alone.

``choose_sigma(coords, rgb, cfg, ...)`` receives the pixels a fit trains on and nothing else: held-out
pixels cannot influence it because they never reach it (``auto_sigma`` splits the image first and passes
the training half only; ``tests/test_fields_complete.py`` changes the held-out pixels and gets the same σ).

The method, a validation split inside the training pixels and a search over log σ:
  1. split: the training pixels lie on a lattice (every pixel for split ``all``, [::2, ::2] for
     ``every-other``); a checkerboard over that lattice fits on the (i + j) even half and validates on
     the odd half (``Search.folds = 2`` also the other way round, validation PSNRs averaged);
  2. σ = 2^(3k/4) for integer k from lo (0.25) to hi (default: a quarter of the training lattice's side,
     where most features reach its Nyquist frequency; no image measured had its held-out best above it):
     7 σ at 64 px, 8 at 128. All σ are fitted as ONE batched model (every trial fits the same seed, so
     trials differ in σ only: B = σ·B₀ with the same B₀ and weights);
  3. a trial stops once its validation PSNR has settled (moved less than 0.1 dB over its last 3 looks, a
     look every steps/30 steps) and leaves the batch; every trial stops when the next interval would pass
     a budget of 3 × steps member-steps (a trial fits half the training pixels: 1.5 full fits' pixel-steps;
     ``bench/autosigma_cost.py`` measures the choice's seconds against a full fit's);
  4. the choice is the LARGEST σ whose validation PSNR (when its trial stopped) is within ``tol_db``
     (0.4 dB) of the best. Why the largest: a validation pixel is a whole lattice step from the fit pixels
     around it, a held-out pixel only half a step, so validation punishes the fine detail of a large σ
     harder than held-out scoring does; among σ that validate about equally well, held-out pixels favour
     the largest. This also copes with bimodal validation curves (hubble: blurred point sources validate
     almost as well as sharp ones on the checkerboard, but not on held-out pixels).
``PREVIOUS`` is the search this replaced (the quarter-octave lattice, both folds, every trial for all its
steps: about 19 full fits at 48 px); how the two compare: research/autosigma.md.

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
    ratio: float = 2 ** 0.75       # step between the σ tried, as a factor: σ = ratio^k, k integer (σ = 1 is tried)
    steps: int | None = None       # most steps per trial (None: the configuration's own)
    folds: int = 1                 # 1: fit the even half, validate on the odd; 2: also the other way round, averaged
    tol_db: float = 0.4            # the largest σ whose validation PSNR is within this of the best wins
    settle_db: float = 0.1         # a trial stops once its validation PSNR moved less than this over `window` looks
    window: int = 3
    looks: int = 30                # looks at the validation PSNRs per trial: one every steps // looks steps
    budget: float = 3.0            # all trials stop before budget × steps member-steps (a trial fits half the
                                   # training pixels: 3 is the pixel-steps of 1.5 full fits); 0: no budget


# the rule before the batched search (kept to compare against): every σ of the quarter-octave lattice from
# 0.25, both folds, every trial for all its steps
PREVIOUS = Search(ratio=2 ** 0.25, folds=2, settle_db=0.0, budget=0.0)


@dataclass
class SigmaChoice:
    sigma: float                   # the choice
    validated: float = 0.0         # the σ with the best validation PSNR (the choice is the largest close to it)
    trials: list[tuple[float, float | None]] = field(default_factory=list)   # (σ, validation PSNR), σ ascending
    steps: list[int] = field(default_factory=list)     # steps each σ's trial ran before it settled or the budget ran out
    fit_pixels: int = 0
    val_pixels: int = 0
    folds: int = 1                 # fits per σ tried
    seconds: float = 0.0

    def text(self) -> str:
        return (f"auto σ = {self.sigma:g} ({len(self.trials)} σ tried as one batched model, {self.folds} fit(s) "
                f"each on the training pixels, {min(self.steps, default=0)}-{max(self.steps, default=0)} steps, "
                f"{self.seconds:.1f} s)")

    def as_dict(self) -> dict:
        return {"sigma": self.sigma, "validated": self.validated, "trials": [[s, p] for s, p in self.trials],
                "steps": self.steps, "fit_pixels": self.fit_pixels, "val_pixels": self.val_pixels,
                "folds": self.folds, "seconds": round(self.seconds, 3)}


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
    """The powers ratio^k (k integer) from lo to hi, σ = 1 among them where it lies in range (at least [lo])."""
    k0 = math.ceil(math.log(lo) / math.log(ratio) - 1e-9)
    k1 = math.floor(math.log(max(hi, lo)) / math.log(ratio) + 1e-9)
    return [ratio**k for k in range(k0, k1 + 1)] or [lo]


def pick_sigma(score, sigmas: list[float], tol_db: float) -> tuple[float, float]:
    """(chosen σ, best-validating σ): the largest σ whose score is within tol_db of the best score."""
    best = max(sigmas, key=score)
    return max(s for s in sigmas if score(s) >= score(best) - tol_db), best


def validation_fits(coords, rgb, cfg, sigmas: list[float], seed: int = 0, device: str = "cpu", folds: int = 2,
                    until=None):
    """Every (σ, fold) as one member of ONE batched model (same seed: same weights and B₀, B = σ·B₀); fold 0
    fits the checkerboard's even half and validates on the odd half, fold 1 the other way round.
    until: as ``fit_pixels``'s, over the validation PSNRs of the members, σ-major ((σ₀, fold 0), (σ₀, fold 1), ...).
    Returns the FitResult; its eval_psnr["val"] lists the members' validation PSNRs in that order."""
    from .engine import fit_pixels

    even = checkerboard(coords)
    halves = [even, ~even][:max(1, folds)]
    fit = [f for _ in sigmas for f in halves]
    return fit_pixels([coords[f] for f in fit], [rgb[f] for f in fit], replace(cfg, encoding="gaussian"),
                      [seed] * len(fit), device, evals={"val": ([coords[~f] for f in fit], [rgb[~f] for f in fit])},
                      sigmas=[s for s in sigmas for _ in halves], until=until)


def fold_means(values, n_sigmas: int) -> list[float | None]:
    """Per σ: the mean of its folds' values (members σ-major), None where a fold is None (diverged)."""
    per = np.array([math.nan if v is None else v for v in values], dtype=float).reshape(n_sigmas, -1).mean(1)
    return [None if not math.isfinite(v) else float(v) for v in per]


def settling(search: Search, steps: int, members: int):
    """The ``until`` of a σ search: (every, fn). fn stops a member once its validation PSNR moved less than
    settle_db over the last ``window`` looks (or is not finite), and every member still training when one
    more interval would take the search past budget × steps member-steps. Where memory splits the members
    into chunks fitted one after another, each chunk gets the budget's share of its members."""
    every = max(1, steps // search.looks)
    history: dict[int, list[float]] = {}
    chunk = {"first": None, "alive": set(), "spent": 0, "budget": 0.0}

    def fn(step: int, scores: dict, first: int = 0) -> set[int]:
        val = scores["val"]
        if chunk["first"] != first:               # a new chunk of members starts
            chunk.update(first=first, alive=set(range(len(val))), spent=0,
                         budget=search.budget * steps * len(val) / members)
        alive = chunk["alive"]
        chunk["spent"] += every * len(alive)
        stop = set()
        for i in alive:
            h = history.setdefault(first + i, [])
            h.append(float(val[i]))
            recent = h[-search.window - 1:]
            if not math.isfinite(h[-1]) or (len(recent) > search.window and max(recent) - min(recent) < search.settle_db):
                stop.add(i)
        alive.difference_update(stop)
        if search.budget and chunk["spent"] + every * len(alive) > chunk["budget"]:
            stop |= alive
            alive.clear()
        return stop

    return every, fn


def choose_sigma(coords, rgb, cfg, seed: int = 0, device: str = "cpu", search: Search = Search(),
                 log=None) -> SigmaChoice:
    """σ for ``cfg`` (a gaussian-encoding FieldConfig) from training pixels coords (N, 2), rgb (N, 3) only."""
    coords, rgb = np.asarray(coords, np.float32), np.asarray(rgb, np.float32)
    t0 = time.perf_counter()
    hi = search.hi if search.hi is not None else max(search.lo, cap(coords))
    sigmas = [float(f"{s:.6g}") for s in sigma_lattice(search.lo, hi, search.ratio)]
    folds = min(2, max(1, search.folds))
    steps = search.steps or cfg.steps
    result = validation_fits(coords, rgb, replace(cfg, steps=steps), sigmas, seed, device, folds,
                             until=settling(search, steps, len(sigmas) * folds))
    val = dict(zip(sigmas, fold_means(result.eval_psnr["val"], len(sigmas))))
    if log:
        log("auto σ: validation PSNR " + ", ".join(f"σ={s:g}: {v}" for s, v in val.items()))
    chosen, best = pick_sigma(lambda s: -math.inf if val[s] is None else val[s], sigmas, search.tol_db)
    even = checkerboard(coords)
    return SigmaChoice(sigma=chosen, validated=best, trials=list(val.items()),
                       steps=[max(result.steps_run[i * folds:(i + 1) * folds]) for i in range(len(sigmas))],
                       fit_pixels=int(even.sum()), val_pixels=int((~even).sum()), folds=folds,
                       seconds=time.perf_counter() - t0)


def auto_sigma(img: np.ndarray, cfg, split: str, seed: int = 0, device: str = "cpu", search: Search = Search(),
               log=None) -> SigmaChoice:
    """σ for fitting ``img`` with ``split``: the held-out pixels are dropped here, before the choice."""
    from ..data.images import split_pixels

    (coords, rgb), _heldout = split_pixels(img, split)
    return choose_sigma(coords, rgb, cfg, seed=seed, device=device, search=search, log=log)
