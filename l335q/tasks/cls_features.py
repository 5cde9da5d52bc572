"""View ``cls-features``: every conv layer's feature maps of one trained CNN job, for chosen test images.

    l335q plot --task cls-features --job ID --samples 0,1,2 --out maps.png

The job's stored weights (``weights/cnn.pt`` from cls-compare or cls-sweep) are loaded with
``weights_only=True``; rows are the chosen test images, columns the input and each conv layer's maps.
Without ``--samples``: the first test image of three classes (0, 1, 2).
"""
from __future__ import annotations

from pathlib import Path

from .. import UserError
from ..results import SubmissionData, Table

DEFAULT_SAMPLES = 3


def parse_samples(samples: str | None, n_test: int, default: list[int]) -> list[int]:
    if not samples:
        return default
    try:
        idx = [int(s) for s in str(samples).replace(" ", "").split(",") if s]
    except ValueError:
        raise UserError(f"--samples: expected comma-separated test-image indices, got {samples!r}") from None
    bad = [i for i in idx if not 0 <= i < n_test]
    if not idx or bad:
        raise UserError(f"--samples: indices must be between 0 and {n_test - 1} (got {samples!r})")
    return idx


def _weights(data: SubmissionData, job_id: int | None):
    from ..classify.features import WEIGHTS_NAME

    if job_id is None:
        raise UserError("cls-features draws one job's CNN: give --job ID (a cls-compare or cls-sweep CNN job)")
    arts = [a for a in data.artifacts(job_id) if a.name.endswith(WEIGHTS_NAME)]
    if not arts:
        raise UserError(f"job {job_id} has no stored CNN weights (not a finished CNN job of cls-compare/cls-sweep)")
    return arts[0]


def results(data: SubmissionData) -> Table:
    raise UserError("cls-features is a per-job figure: use `l335q plot --task cls-features --job ID --out F.png` "
                    "or `l335q images --job ID --out DIR`")


def plot(data: SubmissionData, out: Path, job_id: int | None = None, samples: str | None = None, **_) -> None:
    import torch

    from ..classify.features import layer_maps, load_cnn, mosaic, one_per_class, show_map
    from ..data import fashion_mnist
    from ..plots import figure, save

    art = _weights(data, job_id)
    model = load_cnn(art.data, art.meta["config"])
    fm = fashion_mnist.load("cpu")
    idx = parse_samples(samples, len(fm.x_test), one_per_class(fm.y_test)[:DEFAULT_SAMPLES])
    images = fm.x_test[idx]
    with torch.no_grad():
        predicted = model(images).argmax(1).tolist()
    maps = layer_maps(model, images)
    tiles = {name: [mosaic(m[i]) for i in range(len(idx))] for name, m in maps.items()}
    ratios = [1.0] + [t[0].shape[1] / t[0].shape[0] for t in tiles.values()]
    fig, axes = figure(len(idx), len(ratios), size=(1.0, 1.0), gridspec_kw={"width_ratios": ratios},
                       layout="constrained")
    fig.set_size_inches(1.7 * sum(ratios), 1.8 * len(idx) + 0.5)
    for r, i in enumerate(idx):
        show_map(axes[r, 0], images[r, 0].numpy(), f"#{i} {fm.classes[int(fm.y_test[i])]}\n"
                 f"predicted {fm.classes[predicted[r]]}", cmap="gray", fontsize=7)
        for c, (name, t) in enumerate(tiles.items(), start=1):
            m = maps[name]
            show_map(axes[r, c], t[r], f"{name}: {m.shape[1]} maps {m.shape[2]}x{m.shape[3]}" if r == 0 else None)
    seed = f", seed {art.seed}" if art.seed is not None else ""
    fig.suptitle(f"feature maps of job {job_id}{seed} (each map scaled to its own range)", fontsize=10)
    save(fig, out)
