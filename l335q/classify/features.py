"""Feature maps of a trained CNN: what each conv layer responds to, for a few test images.

``store_cnn(ctx, model, data, seed)`` is what every CNN job calls at its end: it saves the trained weights
(``weights/cnn.pt``, a ``torch.save``d state_dict, read back only with ``weights_only=True``) and one figure
per conv layer (``features/conv1.png`` …) for a fixed set of test images (by default the first test image of
each class). Each map is min–max scaled on its own, so the figures show where a channel fires, not how strongly
compared with other channels.
"""
from __future__ import annotations

import io
import math

import matplotlib
import numpy as np
import torch

from ..plots import figure, png_bytes
from .models import CNN, CNNConfig

MAX_COLUMNS = 16          # at most this many maps per row of a layer's mosaic
WEIGHTS_NAME = "weights/cnn.pt"


def one_per_class(labels: torch.Tensor, per_class: int = 1) -> list[int]:
    """Indices of the first ``per_class`` images of each class, ordered by class."""
    labels = labels.cpu()
    out = []
    for c in sorted(labels.unique().tolist()):
        out += torch.nonzero(labels == c).flatten()[:per_class].tolist()
    return out


def mosaic_columns(c: int) -> int:
    """Maps per mosaic row: a power of two near sqrt(2C) (a mosaic about twice as wide as tall), at most 16."""
    return min(c, MAX_COLUMNS, 2 ** math.ceil(math.log2(math.sqrt(2 * c))))


def mosaic(maps: np.ndarray, columns: int | None = None) -> np.ndarray:
    """C x H x W maps, each scaled to [0, 1] on its own, tiled row-major into one image with 1-pixel gaps (NaN)."""
    c, h, w = maps.shape
    cols = min(c, columns or mosaic_columns(c))
    rows = math.ceil(c / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=np.float32)
    lo = maps.reshape(c, -1).min(1)[:, None, None]
    hi = maps.reshape(c, -1).max(1)[:, None, None]
    scaled = (maps - lo) / np.where(hi > lo, hi - lo, 1.0)
    for i in range(c):
        r, k = divmod(i, cols)
        out[r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = scaled[i]
    return out


def layer_maps(model: CNN, images: torch.Tensor) -> dict[str, np.ndarray]:
    """conv name -> N x C x H x W activations (after BatchNorm and ReLU) as numpy, model in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    maps = {k: v.float().cpu().numpy() for k, v in model.feature_maps(images.to(device)).items()}
    model.train(was_training)
    return maps


def show_map(ax, img, title: str | None = None, cmap: str = "viridis", fontsize: int = 8):
    """Draw a [0, 1] image (NaN = gap, drawn white) without ticks."""
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(img), cmap=cm, interpolation="nearest", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)


def layer_figure(name: str, maps: np.ndarray, images: torch.Tensor, captions: list[str]) -> bytes:
    """PNG: one row per sample — the input image, then all of the layer's C maps as a mosaic."""
    n, c, h, w = maps.shape
    tile = mosaic(maps[0])
    aspect = tile.shape[1] / tile.shape[0]
    fig, axes = figure(n, 2, size=(0.8 * (1 + aspect), 1.0), gridspec_kw={"width_ratios": [1, aspect]},
                       layout="constrained")
    fig.set_size_inches(1.6 * (1 + aspect), 1.7 * n + 0.4)
    for i in range(n):
        show_map(axes[i, 0], images[i, 0].cpu().numpy(), captions[i], cmap="gray")
        show_map(axes[i, 1], mosaic(maps[i]), f"{name}: {c} maps, {h}x{w}" if i == 0 else None)
    fig.suptitle(f"{name} feature maps (each map scaled to its own range)", fontsize=10)
    return png_bytes(fig)


def feature_figures(model: CNN, images: torch.Tensor, captions: list[str]) -> dict[str, tuple[bytes, dict]]:
    """conv name -> (PNG bytes, meta) with one figure per conv layer."""
    out = {}
    for name, maps in layer_maps(model, images).items():
        meta = {"layer": name, "maps": int(maps.shape[1]), "size": list(maps.shape[2:]), "samples": len(captions),
                "columns": mosaic_columns(int(maps.shape[1]))}
        out[name] = (layer_figure(name, maps, images, captions), meta)
    return out


def weights_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getvalue()


def load_cnn(data: bytes, config: dict) -> CNN:
    """A CNN rebuilt from its config and stored weights (``weights_only=True``: no pickled code runs)."""
    model = CNN(CNNConfig.from_dict(config))
    model.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return model.eval()


def store_cnn(ctx, model: CNN, data, seed: int, many_seeds: bool = False, per_class: int = 1) -> None:
    """Save a trained CNN's weights and one feature-map figure per conv layer as artifacts of the job."""
    prefix = f"seed{seed}/" if many_seeds else ""
    ctx.artifact(prefix + WEIGHTS_NAME, weights_bytes(model), "application/octet-stream", seed=seed,
                 meta={"model": "cnn", "config": model.config.to_dict()})
    idx = one_per_class(data.y_test, per_class)
    captions = [f"#{i} {data.classes[int(data.y_test[i])]}" for i in idx]
    for name, (png, meta) in feature_figures(model, data.x_test[idx], captions).items():
        ctx.artifact(f"{prefix}features/{name}.png", png, seed=seed, meta={**meta, "test_indices": idx})
