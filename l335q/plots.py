"""Matplotlib helpers every task kind's ``plot`` shares (headless Agg backend)."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (5.0, 3.6), **kw):
    """A figure of nrows x ncols panels, each ``size`` inches; returns (fig, axes as a 2-D array)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, **kw)
    return fig, axes


def band(ax, steps, mean, sd, label: str, color=None, linestyle: str = "-", alpha: float = 0.18):
    """The mean as a line and a ±sd band around it."""
    steps, mean = np.asarray(steps, float), np.asarray(mean, float)
    sd = np.nan_to_num(np.asarray(sd, float))
    (line,) = ax.plot(steps, mean, linestyle=linestyle, color=color, label=label)
    ax.fill_between(steps, mean - sd, mean + sd, color=line.get_color(), alpha=alpha, linewidth=0)
    return line


def png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save(fig, out: Path, dpi: int = 110) -> Path:
    """Write the figure to ``out`` (PNG), creating the folder; the file appears whole or not at all."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(png_bytes(fig, dpi))
    tmp.replace(out)
    return out


def image_png(rgb) -> bytes:
    """PNG bytes of an H x W x 3 (or H x W) array of floats in [0, 1] or uint8."""
    from PIL import Image

    a = np.asarray(rgb)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def png_array(data: bytes) -> np.ndarray:
    """Decode PNG bytes into a float array in [0, 1]."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255.0
