"""Coordinate encodings γ(g) for g = (x, y) in [0, 1)², batched over S seeds.

  none      γ(g) = g
  basic     γ(g) = [cos 2πg, sin 2πg]
  posenc    γ(g) = [cos 2πσ^(j/n)·g, sin 2πσ^(j/n)·g], j = 0 .. n-1, n = m/2 per axis: axis-aligned,
            log-spaced frequencies from 1 to σ (the positional encoding of Tancik et al. 2020, NeRF-style);
            2m inputs, as many as ``gaussian``
  gaussian  γ(g) = [cos 2πBg, sin 2πBg], B ∈ R^{m x 2}, B_ij ~ N(0, σ²) (Tancik et al. 2020), drawn per seed
            from torch.Generator(seed) so a seed has the same features alone or in a batch.
An encoding is a frequency matrix per seed: B of shape (S, 2, m) (identity for ``none``); σ may differ per seed.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .names import ENCODINGS  # noqa: F401  (re-exported)


def posenc_frequencies(features: int, sigma: float) -> torch.Tensor:
    """Axis-aligned log-spaced frequencies σ^(j/n), j < n = max(1, m // 2), for x then y: (2, 2n)."""
    n = max(1, features // 2)
    f = float(max(sigma, 1.0)) ** (torch.arange(n, dtype=torch.float64) / n)
    zeros = torch.zeros(n, dtype=torch.float64)
    return torch.stack([torch.cat([f, zeros]), torch.cat([zeros, f])]).float()


def frequency_matrix(encoding: str, seeds: list[int], features: int = 256,
                     sigma: float | Sequence[float] = 10.0) -> torch.Tensor | None:
    """B for every seed: (S, 2, m) float32, or None for ``none`` (raw coordinates).

    sigma: one σ for every seed, or one per seed (members of a batch that differ in σ only: the same seed
    twice gives the same B₀ times two σ, exactly as two separate calls would)."""
    S = len(seeds)
    sigmas = [float(sigma)] * S if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if len(sigmas) != S:
        raise ValueError(f"{len(sigmas)} σ for {S} seeds")
    if encoding == "none":
        return None
    if encoding == "basic":
        return torch.eye(2).expand(S, 2, 2).clone()
    if encoding == "posenc":
        return torch.stack([posenc_frequencies(features, s) for s in sigmas])
    if encoding == "gaussian":
        # per seed, its own stream (offset so it differs from the stream the weights are drawn from)
        B0 = torch.stack([torch.randn(2, features, generator=torch.Generator().manual_seed(int(s) + 7_919_000_001))
                          for s in seeds])
        return B0 * torch.tensor(sigmas, dtype=torch.float32).view(S, 1, 1)
    raise ValueError(f"unknown encoding {encoding!r} (known: {', '.join(ENCODINGS)})")


def encode(coords: torch.Tensor, B: torch.Tensor | None) -> torch.Tensor:
    """coords (N, 2) or (S, N, 2) -> (S, N, d). With B None the coordinates pass through unchanged."""
    if B is None:
        return coords if coords.dim() == 3 else coords.unsqueeze(0)
    if coords.dim() == 2:
        coords = coords.unsqueeze(0).expand(B.shape[0], -1, -1)
    proj = 2.0 * math.pi * torch.bmm(coords, B)
    return torch.cat([torch.cos(proj), torch.sin(proj)], dim=-1)
