"""The data-aware ``mean-colour`` initialiser (no dead ReLU outputs at initialisation, reproducible, a tiny fit
clears 15 dB on every seed) and the ``inr-init`` summary that names the initialisers passing every seed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from l335q.data.images import grid, load_image, resize
from l335q.fields.engine import FieldConfig, fit_image
from l335q.fields.models import BatchedMLP
from l335q.results import JobData, SubmissionData
from l335q.tasks import inr_init

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def output_pre_activation(mlp: BatchedMLP, img: np.ndarray) -> torch.Tensor:
    """(S, pixels, 3): the output layer's pre-activation on every pixel of img's grid."""
    h, w = img.shape[:2]
    with torch.no_grad():
        return mlp.pre_output(torch.from_numpy(grid(h, w).reshape(-1, 2)).expand(len(mlp.seeds), -1, -1))


def horse(resolution: int) -> np.ndarray:
    """An image l335q's samples do not include: scikit-image's horse, white on black, as a user would load it."""
    import skimage.data

    a = (~skimage.data.horse()).astype(np.float32)
    return resize(np.repeat(a[..., None], 3, axis=2), resolution)


@pytest.mark.parametrize("image", ["sample:coffee", "horse"])
def test_mean_colour_leaves_no_dead_output_unit_over_200_seeds(image):
    img = horse(16) if image == "horse" else resize(load_image(image), 16)
    mean = torch.from_numpy(img.reshape(-1, 3).mean(0))
    seeds = list(range(200))
    dead = {}
    for init in ("mean-colour", "default"):
        mlp = BatchedMLP(seeds, 2, depth=4, width=256, output="relu", init=init, target_mean=mean)
        dead[init] = (output_pre_activation(mlp, img) <= 0).all(1).sum().item()     # (seed, unit) pairs
    assert dead["mean-colour"] == 0
    assert dead["default"] > 20, "the measurement should see the standard initialiser's dead outputs"


def test_mean_colour_is_reproducible_and_keeps_the_default_hidden_layers():
    mean = torch.tensor([0.3, 0.4, 0.1])
    a = BatchedMLP([3, 8], 2, depth=4, width=32, output="relu", init="mean-colour", target_mean=mean)
    b = BatchedMLP([8], 2, depth=4, width=32, output="relu", init="mean-colour", target_mean=mean)
    ref = BatchedMLP([3, 8], 2, depth=4, width=32, output="relu", init="default")
    for k in range(4):
        assert torch.equal(a.weights[k][1], b.weights[k][0]) and torch.equal(a.biases[k][1], b.biases[k][0])
        if k < 3:
            assert torch.equal(a.weights[k], ref.weights[k]) and torch.equal(a.biases[k], ref.biases[k])
    assert torch.count_nonzero(a.weights[3]) == 0 and torch.equal(a.biases[3], mean.expand(2, 1, 3))
    sig = BatchedMLP([0], 2, depth=2, width=8, output="sigmoid", init="mean-colour", target_mean=mean)
    assert torch.allclose(torch.sigmoid(sig.biases[1][0, 0]), mean, atol=1e-6)
    with pytest.raises(ValueError, match="mean colour"):
        BatchedMLP([0], 2, init="mean-colour")
    cfg = FieldConfig(depth=3, width=16, steps=10, output="relu", init="mean-colour")
    img = resize(load_image("sample:camera"), 8)
    assert fit_image(img, cfg, [1, 2]).train_psnr == fit_image(img, cfg, [1, 2]).train_psnr


def test_a_tiny_fit_with_mean_colour_clears_15_db_on_every_seed():
    """The practical's network (raw (x, y), 4 x 256 ReLU, ReLU output, Adam 1e-3), an unseen image, 12 px, 100 steps."""
    cfg = FieldConfig(depth=4, width=256, output="relu", init="mean-colour", lr=1e-3, steps=100)
    psnr = fit_image(horse(12), cfg, list(range(4))).train_psnr
    assert min(psnr) > inr_init.THRESHOLD_DB, psnr


def submission(psnr: dict[str, list[float | None]]) -> SubmissionData:
    jobs = [JobData(i, {"initialiser": init, "image": "sample:camera", "resolution": 16, "output": "relu"}, "done",
                    1.0, None, {}, [(seed, None, "psnr", v) for seed, v in enumerate(values)])
            for i, (init, values) in enumerate(psnr.items())]
    return SubmissionData(1, "inr-init", None, {"steps": 10, "depth": 4, "width": 256, "optimizer": "adam",
                                                "lr": 1e-3, "output": "relu"}, jobs)


def test_the_summary_names_the_initialisers_that_pass_every_seed_from_the_rows():
    one = inr_init.results(submission({"default": [16.0, 5.6, 17.0], "mean-colour": [18.0, 18.5, 17.9]}))
    assert one.summary == ["above 15 dB for every seed: mean-colour (3 of 3 seeds, median 18.00 dB); not every seed: "
                           "default fails for 1 of 3 seeds (median 16.00 dB)"]
    two = inr_init.results(submission({"default": [16.0, 15.5, 17.0], "mean-colour": [18.0, None, 17.9]}))
    assert two.summary == ["above 15 dB for every seed: default (3 of 3 seeds, median 16.00 dB); not every seed: "
                           "mean-colour fails for 1 of 3 seeds (median 17.95 dB)"]
    none = inr_init.results(submission({"default": [14.0, 16.0], "xavier-uniform": [5.6, 5.6]}))
    assert none.summary == ["no initialiser stays above 15 dB for every seed: default fails for 1 of 2 seeds "
                            "(median 15.00 dB); xavier-uniform fails for 2 of 2 seeds (median 5.60 dB)"]
