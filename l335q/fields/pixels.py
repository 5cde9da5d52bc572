"""Pixels a neural field fits or is scored on, and PSNR.

PSNR = 10·log10(1 / MSE) on [0, 1] colours. ``Pixels`` holds one pixel set shared by every member of a
batched model, or one set per member (padded to the longest, with weights so that each member's loss and
PSNR are over its own pixels only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def psnr(pred, target) -> float:
    """PSNR in dB of colours in [0, 1] over all of pred (any shape, e.g. an h x w x 3 image): 10·log10(1 / MSE)."""
    pred, target = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    return float(10.0 * torch.log10(1.0 / ((pred - target) ** 2).mean()))


def seed_psnr(pred, target, weight=None) -> torch.Tensor:
    """PSNR per seed: pred (S, ...) against target of the same shape (or broadcastable), over all other axes;
    with weight (S, N) (see ``Pixels``) pred is (S, N, 3) and each seed's MSE is the weighted sum over its pixels."""
    pred, target = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    se = (pred - target) ** 2
    mse = se.flatten(1).mean(1) if weight is None else (se.mean(2) * weight.double()).sum(1)
    return 10.0 * torch.log10(1.0 / mse)


@dataclass
class Pixels:
    """Pixels to fit or score: one set shared by every seed (coords (N, 2), rgb (N, 3)), or one set per member
    of the batch (coords (S, N, 2), rgb (S, N, 3)), padded to the longest set with weight (S, N): 1/n on a
    member's n own pixels and 0 on padding, so a weighted sum is that member's own mean (None: no padding)."""
    coords: torch.Tensor
    rgb: torch.Tensor
    weight: torch.Tensor | None = None

    @classmethod
    def of(cls, coords, rgb) -> "Pixels":
        """From arrays (a shared set) or from lists of S arrays (one set per member)."""
        if not isinstance(coords, (list, tuple)):
            return cls(torch.as_tensor(np.asarray(coords), dtype=torch.float32),
                       torch.as_tensor(np.asarray(rgb), dtype=torch.float32))
        sets = [(torch.as_tensor(np.asarray(c), dtype=torch.float32), torch.as_tensor(np.asarray(t), dtype=torch.float32))
                for c, t in zip(coords, rgb)]
        n = [len(c) for c, _ in sets]
        N = max(n)

        def pad(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x, x[-1:].expand(N - len(x), -1)])

        weight = None
        if min(n) != N:
            weight = torch.stack([(torch.arange(N) < k).float() / k for k in n])
        return cls(torch.stack([pad(c) for c, _ in sets]), torch.stack([pad(t) for _, t in sets]), weight)

    @property
    def shared(self) -> bool:
        return self.coords.dim() == 2

    @property
    def n(self) -> int:
        return self.coords.shape[-2]

    def mean(self) -> torch.Tensor:
        """The mean colour: (3,) of a shared set, (S, 3) of one set per member (its own pixels only)."""
        if self.shared:
            return self.rgb.mean(0)
        if self.weight is None:
            return self.rgb.mean(1)
        return (self.rgb * self.weight[..., None]).sum(1)

    def counts(self, S: int) -> list[int]:
        """Each member's own pixel count."""
        if self.weight is None:
            return [self.n] * S
        return [int(k) for k in (self.weight > 0).sum(1).tolist()]

    def members(self, i: int, j: int) -> "Pixels":
        """Members i..j-1 (a shared set is everyone's)."""
        if self.shared:
            return self
        return Pixels(self.coords[i:j], self.rgb[i:j], None if self.weight is None else self.weight[i:j])

    def pick(self, idx: list[int]) -> "Pixels":
        """The members at positions ``idx`` (a shared set is everyone's)."""
        if self.shared:
            return self
        i = torch.tensor(idx, device=self.coords.device)
        return Pixels(self.coords[i], self.rgb[i], None if self.weight is None else self.weight[i])

    def to(self, dev) -> "Pixels":
        return Pixels(self.coords.to(dev), self.rgb.to(dev), None if self.weight is None else self.weight.to(dev))

    def target(self, S: int) -> torch.Tensor:
        return self.rgb.expand(S, -1, -1)
