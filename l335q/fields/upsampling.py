"""Upsampling: a fitted field rendered on a K-times denser grid, and the classic interpolations beside it.

Pixel-centre convention (the one of skimage.transform.resize, PIL, and torch with align_corners=False):
pixel i of an n-pixel row covers [i, i + 1) in pixel units and holds the value at its centre i + 1/2.
``grid(h, w)`` gives pixel (i, j) the field coordinate (j / w, i / h): a field's coordinate for a point
at position p (pixel units, centres at i + 1/2) is (p - 1/2) / n. Pixel J of the K× denser row is
centred at p = (J + 1/2) / K, so its field coordinate is ((J + 1/2) / K - 1/2) / n — ``dense_grid``.
For odd K every K-th dense pixel (J = K·i + (K - 1)/2) sits exactly on low-resolution pixel i; for even K
dense pixels straddle the low-resolution ones (none is shared). Bicubic, bilinear and nearest use the same
convention, so all four upsamplings of a low-resolution copy line up with the original pixel for pixel.

The measurable version: ``downsample`` averages K x K blocks (area / box filter: low-resolution pixel i
is the mean of original pixels K·i .. K·i + K - 1, centred where the dense grid puts it), a field is
fitted to the low-resolution copy, rendered on ``dense_grid`` and scored against the original.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import UserError
from .engine import psnr
from .names import BASELINES, METHODS  # noqa: F401  (re-exported)


def dense_grid(h: int, w: int, factor: int) -> np.ndarray:
    """Field coordinates of the (h·K) x (w·K) grid that upsamples an h x w image by K: (h·K, w·K, 2) float32."""
    if factor < 1 or int(factor) != factor:
        raise UserError(f"upsampling factor must be a positive integer, got {factor!r}")
    K = int(factor)
    y = ((np.arange(h * K, dtype=np.float64) + 0.5) / K - 0.5) / h
    x = ((np.arange(w * K, dtype=np.float64) + 0.5) / K - 0.5) / w
    yy, xx = np.meshgrid(y, x, indexing="ij")
    return np.stack([xx, yy], axis=-1).astype(np.float32)


def render_dense(result, h: int, w: int, factor: int) -> np.ndarray:
    """Every seed of a FitResult (fitted on an h x w grid) rendered K times denser: (S, h·K, w·K, 3)."""
    coords = dense_grid(h, w, factor)
    out = result.render(torch.from_numpy(coords.reshape(-1, 2)))
    return out.reshape(len(result.seeds), h * factor, w * factor, 3).numpy()


def downsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each K x K block (sides must be multiples of K): (h/K, w/K, 3) float32."""
    h, w = img.shape[0] // factor, img.shape[1] // factor
    if (h * factor, w * factor) != img.shape[:2]:
        raise UserError(f"image sides {img.shape[1]}x{img.shape[0]} are not multiples of {factor} (crop first)")
    return img.reshape(h, factor, w, factor, -1).mean(axis=(1, 3)).astype(np.float32)


def _kernel(method: str, d: np.ndarray) -> np.ndarray:
    """Interpolation weight at distance d (pixels): triangle (bilinear) or Keys cubic convolution, a = -0.5."""
    d = np.abs(d)
    if method == "bilinear":
        return np.clip(1.0 - d, 0.0, None)
    a = -0.5
    near = (a + 2) * d**3 - (a + 3) * d**2 + 1
    far = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _resample_axis(x: np.ndarray, factor: int, method: str, axis: int) -> np.ndarray:
    """Upsample one axis K times; out-of-range taps repeat the edge pixel."""
    n = x.shape[axis]
    p = (np.arange(n * factor) + 0.5) / factor - 0.5          # dense pixel centres, low-res pixel units
    if method == "nearest":
        return np.take(x, np.clip(np.floor(p + 0.5).astype(int), 0, n - 1), axis=axis)
    taps = np.arange(0, 2) if method == "bilinear" else np.arange(-1, 3)
    src = np.floor(p)[:, None] + taps[None, :]                  # (n·K, taps)
    weights = _kernel(method, p[:, None] - src)
    gathered = np.take(x, np.clip(src, 0, n - 1).astype(int), axis=axis)   # axis becomes (n·K, taps)
    shape = [1] * gathered.ndim
    shape[axis], shape[axis + 1] = weights.shape
    return (gathered * weights.reshape(shape)).sum(axis=axis + 1)


def interpolate(low: np.ndarray, factor: int, method: str) -> np.ndarray:
    """Upsample an h x w x 3 image K times with a classic separable kernel, pixel-centre aligned, clipped to [0, 1].

    bicubic: Keys cubic convolution with a = -0.5 (PIL, MATLAB; reproduces quadratics exactly),
    bilinear: triangle kernel, nearest: the pixel whose centre is nearest. Edges repeat the border pixel.
    """
    if method not in BASELINES:
        raise UserError(f"upsampling method {method!r} is not one of {', '.join(BASELINES)}")
    out = np.asarray(low, dtype=np.float64)
    for axis in (0, 1):
        out = _resample_axis(out, int(factor), method, axis)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004; skimage, 7 x 7 window) over colour channels, data range 1."""
    from skimage.metrics import structural_similarity

    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    side = min(pred.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    return float(structural_similarity(pred, target, data_range=1.0, channel_axis=-1, win_size=win))


def scores(pred: np.ndarray, original: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(pred, original), "ssim": ssim(pred, original)}
