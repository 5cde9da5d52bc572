"""Images for neural fields: bundled samples, user files (stored with the submission), grids and splits.

An image reference is one of
  ``sample:<name>``   a picture that ships inside scikit-image (see ``SAMPLES``; ``sky`` is the sky of
                      ``rocket``: low frequencies; ``grass``: high frequencies),
  ``upload:<sha256>`` bytes stored with a submission (a worker gets them through ``loader``),
  a file path         PNG, JPEG or TIFF on this machine.
Every image comes back as float32 H x W x 3 in [0, 1]: grayscale is replicated to three channels,
an alpha channel is dropped (with a logged warning), 8- and 16-bit integers are scaled by their range.
Coordinates follow the practical: pixel (i, j) of an h x w image sits at (x, y) = (j / w, i / h) in [0, 1).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from .. import UserError

log = logging.getLogger("l335q.images")

MAX_BYTES = 50 * 1024 * 1024          # a file larger than this is refused before decoding
MAX_PIXELS = 4096 * 4096              # a decoded image larger than this is refused
MIN_SIDE = 2                          # a 1-pixel-wide image has nothing to fit

# name -> (skimage.data function, crop as (row slice, column slice) or None)
SAMPLES = {
    "astronaut": ("astronaut", None), "camera": ("camera", None), "coffee": ("coffee", None),
    "chelsea": ("chelsea", None), "cat": ("cat", None), "rocket": ("rocket", None),
    "sky": ("rocket", (slice(0, 112), slice(96, 544))),   # above the towers and the rocket's tip: only sky
    "grass": ("grass", None), "gravel": ("gravel", None), "brick": ("brick", None), "moon": ("moon", None),
    "coins": ("coins", None), "clock": ("clock", None), "page": ("page", None), "text": ("text", None),
    "checkerboard": ("checkerboard", None), "colorwheel": ("colorwheel", None),
    "immunohistochemistry": ("immunohistochemistry", None), "hubble": ("hubble_deep_field", None),
    "retina": ("retina", None), "cell": ("cell", None), "microaneurysms": ("microaneurysms", None),
    "logo": ("logo", None),
}


def to_rgb(a: np.ndarray, source: str = "image") -> np.ndarray:
    """Any decoded array (H x W, H x W x 1/2/3/4; bool, uint8, uint16, float) -> float32 H x W x 3 in [0, 1]."""
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] in (2, 4):
        log.warning("%s: alpha channel dropped (fields fit colour only)", source)
        a = a[..., :-1]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        raise UserError(f"{source}: cannot use an image of shape {a.shape} (expected grayscale, RGB or RGBA)")
    if a.dtype == bool:
        a = a.astype(np.float32)
    elif np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    else:
        a = a.astype(np.float32)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if not np.isfinite(a).all():
            raise UserError(f"{source}: the image holds non-finite values")
        if lo < 0 or hi > 1:
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return check_size(np.ascontiguousarray(a), source)


def check_size(img: np.ndarray, source: str) -> np.ndarray:
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise UserError(f"{source}: a {w}x{h} image is too small to fit (at least {MIN_SIDE}x{MIN_SIDE})")
    if h * w > MAX_PIXELS:
        raise UserError(f"{source}: a {w}x{h} image is too large (limit {MAX_PIXELS:,} pixels)")
    return img


def decode_image(data: bytes, source: str = "image") -> np.ndarray:
    """PNG / JPEG / TIFF bytes -> float32 H x W x 3 in [0, 1]; any problem is a one-line UserError."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > MAX_BYTES:
        raise UserError(f"{source}: file is {len(data) / 2**20:.0f} MiB, more than the limit {MAX_BYTES // 2**20} MiB")
    if not data:
        raise UserError(f"{source}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            check_size(np.empty((h, w, 0)), source)      # refuse before decoding the pixels
            if im.format not in ("PNG", "JPEG", "TIFF", "MPO"):
                raise UserError(f"{source}: {im.format} images are not supported (use PNG, JPEG or TIFF)")
            mode = im.mode
            if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
            a = np.asarray(im)
    except UserError:
        raise
    except UnidentifiedImageError:
        raise UserError(f"{source}: not an image (PIL cannot identify it; use PNG, JPEG or TIFF)") from None
    except Image.DecompressionBombError as exc:    # PIL's own guard at open, from the header alone
        raise UserError(f"{source}: the image is too large ({exc}; limit {MAX_PIXELS:,} pixels)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{source}: cannot decode the image ({why})") from None
    if mode.startswith("I;16") or (mode == "I" and a.max(initial=0) <= 65535 and a.min(initial=0) >= 0):
        a = a.astype(np.uint16)            # 16-bit grayscale (PIL reads some as 32-bit "I")
    return to_rgb(a, source)


def read_input(path) -> bytes:
    """Submit-time hook for spec keys with ``file=True``: the file's bytes, after proving they decode."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"image file not found: {path}")
    if p.stat().st_size > MAX_BYTES:
        raise UserError(f"{p.name}: file is {p.stat().st_size / 2**20:.0f} MiB, more than the limit {MAX_BYTES // 2**20} MiB")
    data = p.read_bytes()
    decode_image(data, p.name)
    return data


def sample(name: str) -> np.ndarray:
    if name not in SAMPLES:
        raise UserError(f"unknown sample image {name!r} (known: {', '.join(SAMPLES)})")
    import skimage.data

    fn, crop = SAMPLES[name]
    a = getattr(skimage.data, fn)()
    if crop is not None:
        a = a[crop]
    return to_rgb(a, f"sample:{name}")


def load_image(ref: str, *, loader: Callable[[str], bytes] | None = None) -> np.ndarray:
    """``sample:<name>``, ``upload:<sha256>`` (bytes from ``loader``, e.g. ``ctx.input_bytes``) or a path."""
    if not isinstance(ref, str) or not ref:
        raise UserError(f"image: expected sample:<name>, upload:<sha256> or a file path, got {ref!r}")
    if ref.startswith("sample:"):
        return sample(ref.removeprefix("sample:"))
    if ref.startswith("upload:"):
        if loader is None:
            raise UserError(f"image {ref}: an uploaded image needs its submission (no loader given)")
        return decode_image(loader(ref), ref)
    return decode_image(read_input(ref), Path(ref).name)


def resize(img: np.ndarray, resolution: int | None) -> np.ndarray:
    """Centre-crop to a square and resize (anti-aliased) to resolution x resolution; None keeps the image."""
    if resolution is None:
        return img
    if resolution < MIN_SIDE:
        raise UserError(f"resolution {resolution} is too small (at least {MIN_SIDE})")
    from skimage.transform import resize as sk_resize

    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    square = img[top:top + s, left:left + s]
    if s == resolution:
        return np.ascontiguousarray(square, dtype=np.float32)
    out = sk_resize(square, (resolution, resolution), order=1, anti_aliasing=s > resolution, mode="reflect")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def grid(h: int, w: int) -> np.ndarray:
    """Coordinates of an h x w pixel grid, (h, w, 2) float32 with [..., 0] = x = j / w, [..., 1] = y = i / h."""
    y, x = np.meshgrid(np.arange(h, dtype=np.float32) / h, np.arange(w, dtype=np.float32) / w, indexing="ij")
    return np.stack([x, y], axis=-1)


SPLITS = ("all", "every-other")


def split_pixels(img: np.ndarray, split: str = "all"):
    """Training and held-out pixels as ((coords N x 2, rgb N x 3), (coords, rgb) or None).

    ``all``: train and score on every pixel. ``every-other``: train on pixels [::2, ::2] (a quarter),
    hold out the other three quarters, as in Tancik et al. (2020); coordinates stay those of the full grid.
    """
    h, w = img.shape[:2]
    g = grid(h, w)
    if split == "all":
        return (g.reshape(-1, 2), img.reshape(-1, 3)), None
    if split != "every-other":
        raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    train = np.zeros((h, w), dtype=bool)
    train[::2, ::2] = True
    return (g[train], img[train]), (g[~train], img[~train])
