"""inr-arch, ffn-sigma (with automatic σ) and upsample: grid expansion, automatic σ never seeing held-out
pixels, upsampling geometry, baseline alignment, and tiny end-to-end submissions through the real CLI."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from l335q.data.images import grid, load_image, resize, split_pixels
from l335q.fields.autosigma import (Search, auto_sigma, cap, checkerboard, fold_means, pick_sigma, settling,
                                    sigma_lattice)
from l335q.fields.engine import FieldConfig, fit_image, fit_pixels
from l335q.fields.summary import consistency, spearman
from l335q.fields.upsampling import dense_grid, downsample, interpolate, render_dense, scores
from l335q.specs import SpecError, expand

from conftest import l335q_cmd

TINY = FieldConfig(depth=2, width=32, encoding="gaussian", features=32, sigma=4.0, steps=60)


def test_inr_arch_grid_expansion():
    exp = expand({"task": "inr-arch", "depth": [2, 4], "width": [16, 32], "loss": ["mse", "l1", "huber"],
                  "optimizer": ["adam", "sgd-momentum"], "image": ["sample:sky", "sample:camera"], "resolution": [16, 32],
                  "seeds": "0-4"})
    assert len(exp.jobs) == 2 * 2 * 3 * 2 * 2 * 2          # seeds batched: one job per cell
    assert all(j["seeds"] == [0, 1, 2, 3, 4] for j in exp.jobs)
    cells = {(j["depth"], j["width"], j["loss"], j["optimizer"], j["image"], j["resolution"]) for j in exp.jobs}
    assert len(cells) == len(exp.jobs)
    with pytest.raises(SpecError, match="loss"):
        expand({"task": "inr-arch", "loss": ["mse", "l2"]})
    with pytest.raises(SpecError, match="auto needs encoding: gaussian"):
        expand({"task": "inr-arch", "sigma": "auto", "encoding": "none"})


def test_precision_is_one_choice_per_submission_of_every_field_kind():
    from l335q.fields.jobs import field_config
    from l335q.tasks.inr_init import config

    for task in ("inr-arch", "ffn-sigma", "upsample", "inr-init"):
        assert {j["precision"] for j in expand({"task": task}).jobs} == {"fp32"}
        jobs = expand({"task": task, "precision": "bf16"}).jobs
        cfgs = [config(j) if task == "inr-init" else field_config(j) for j in jobs]
        assert {c.precision for c in cfgs} == {"bf16"}
        with pytest.raises(SpecError, match="precision"):
            expand({"task": task, "precision": "fp16"})
        with pytest.raises(SpecError, match="precision"):
            expand({"task": task, "precision": ["fp32", "bf16"]})


def test_ffn_sigma_adds_one_auto_job_per_image_unless_told_not_to():
    spec = {"task": "ffn-sigma", "image": ["sample:sky", "sample:grass"], "sigma": [1, 5, 25], "seeds": "0-2"}
    jobs = expand(spec).jobs
    assert sorted((j["image"], str(j["sigma"])) for j in jobs) == sorted(
        (im, s) for im in ("sample:sky", "sample:grass") for s in ("1.0", "5.0", "25.0", "auto"))
    assert len(expand({**spec, "auto": False}).jobs) == 6
    assert len(expand({**spec, "sigma": [1, "auto"]}).jobs) == 4          # auto listed once, not twice
    with pytest.raises(SpecError, match="sigma"):
        expand({**spec, "sigma": [1, "automatic"]})


def test_upsample_spec_checks_resolution_against_factor():
    assert len(expand({"task": "upsample", "image": ["sample:sky", "sample:camera"], "factor": [2, 4],
                       "resolution": 32}).jobs) == 4
    with pytest.raises(SpecError, match="multiple of factor"):
        expand({"task": "upsample", "resolution": 30, "factor": 4})


def test_checkerboard_splits_a_sparse_lattice_in_halves_of_alternating_pixels():
    img = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    (coords, _), _ = split_pixels(img, "every-other")                 # a 6 x 5 lattice of training pixels
    part = checkerboard(coords).reshape(6, 5)
    assert part.sum() == 15 and part[0, 0] and not part[0, 1] and not part[1, 0] and part[1, 1]
    assert sigma_lattice(0.5, 8.0, 2.0) == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert [round(s, 4) for s in sigma_lattice(0.25, 6.0, 2 ** 0.75)] == [0.3536, 0.5946, 1.0, 1.6818, 2.8284, 4.7568]
    assert cap(coords) == 5 / 4                  # the σ search stops at a quarter of the lattice's shorter side


def test_pick_sigma_takes_the_largest_sigma_within_tolerance_of_the_best():
    """A bimodal validation curve (as hubble's): the best σ is small, a second mode 0.4 dB lower is large."""
    def score(s):
        return 25.6 if s < 0.4 else 25.2 if 2.5 < s < 4.5 else 24.0
    sigmas = sigma_lattice(0.25, 6.0, 2 ** 0.5)                     # 0.25, 0.35, 0.5, ... 4, 5.66
    assert pick_sigma(score, sigmas, 0.5) == (pytest.approx(4.0), pytest.approx(0.25))
    assert pick_sigma(score, sigmas, 0.3)[0] == pytest.approx(0.25 * 2 ** 0.5)   # the mode at 4 is too far down
    assert pick_sigma(lambda s: -abs(s - 3.0), [1.0, 2.0], 0.0) == (2.0, 2.0)    # never past the largest tried


def test_a_missed_target_is_weighed_against_seed_noise():
    """The gap's standard error comes from both cells' sds and seed counts: sqrt(0.8²/2 + 0.6²/2) = 0.71."""
    from l335q.tasks.ffn_sigma import gap_noise

    best = {"heldout_psnr_mean": 51.0, "heldout_psnr_sd": 0.8, "seeds": 2}
    assert "0.71 dB" in gap_noise(best, {"heldout_psnr_mean": 50.5, "heldout_psnr_sd": 0.6, "seeds": 2})
    assert "within two" in gap_noise(best, {"heldout_psnr_mean": 50.5, "heldout_psnr_sd": 0.6, "seeds": 2})
    assert "beyond two" in gap_noise(best, {"heldout_psnr_mean": 49.0, "heldout_psnr_sd": 0.6, "seeds": 2})
    assert gap_noise(best, {"heldout_psnr_mean": 49.0, "heldout_psnr_sd": 0.0, "seeds": 1}) == ""


def test_auto_sigma_never_touches_held_out_pixels():
    """By construction choose_sigma only receives the training pixels; here: scrambling every held-out
    pixel leaves the choice and every trial's validation PSNR identical, while changing one training
    pixel changes the trials (so the check can fail)."""
    img = resize(load_image("sample:camera"), 24)
    search = Search(lo=1.0, hi=4.0, ratio=2.0)
    first = auto_sigma(img, TINY, "every-other", seed=0, search=search)
    scrambled = img.copy()
    held = np.ones(img.shape[:2], bool)
    held[::2, ::2] = False
    scrambled[held] = np.random.default_rng(1).random((held.sum(), 3))
    second = auto_sigma(scrambled, TINY, "every-other", seed=0, search=search)
    assert second.sigma == first.sigma and second.trials == first.trials
    assert len(first.trials) == 3 and first.folds == 1 and first.fit_pixels + first.val_pixels == 12 * 12
    touched = img.copy()
    touched[0, 0] = 1.0 - touched[0, 0]
    assert auto_sigma(touched, TINY, "every-other", seed=0, search=search).trials != first.trials


def _solo_choice(coords, rgb, cfg, search: Search, steps_each=None):
    """The σ search done the slow way: each (σ, fold) fitted alone (with the same stop rule for one member)."""
    even = checkerboard(coords)
    sigmas = [float(f"{s:.6g}") for s in sigma_lattice(search.lo, search.hi, search.ratio)]   # as choose_sigma rounds
    vals, steps = [], []
    for k, sigma in enumerate(sigmas):
        for f in [even, ~even][:search.folds]:
            one = replace(cfg, sigma=sigma, steps=steps_each or cfg.steps)
            r = fit_pixels(coords[f], rgb[f], one, [0], evals={"val": (coords[~f], rgb[~f])},
                           until=None if steps_each else settling(search, cfg.steps, 1))
            vals.append(r.eval_psnr["val"][0])
            steps.append(r.steps_run[0])
    per = fold_means(vals, len(sigmas))
    return pick_sigma(dict(zip(sigmas, per)).__getitem__, sigmas, search.tol_db)[0], per, steps


@pytest.mark.parametrize("budget,settle,steps", [(0.0, 0.3, 150), (1.0, 0.0, 90)])
def test_the_batched_search_equals_fitting_each_sigma_alone(budget, settle, steps):
    """All (σ, fold) trials as one batched model, members leaving as they settle (or all at once when the
    budget runs out), give the validation PSNRs, steps and choice of fitting each trial on its own."""
    img = resize(load_image("sample:camera"), 24)
    (coords, rgb), _ = split_pixels(img, "every-other")
    cfg = replace(TINY, steps=steps)
    search = Search(lo=0.5, hi=3.0, ratio=2 ** 0.75, folds=2, budget=budget, settle_db=settle, looks=steps // 10)
    batched = auto_sigma(img, cfg, "every-other", seed=0, search=search)
    budget_steps = None
    if budget:                        # 8 members, a look every 10 steps: 90 member-steps allow 10 steps each
        budget_steps = 10
        assert batched.steps == [10] * 4
    solo, per, steps = _solo_choice(coords, rgb, cfg, search, budget_steps)
    assert [s for s, _ in batched.trials] == pytest.approx(sigma_lattice(0.5, 3.0, 2 ** 0.75), rel=1e-5)
    assert [v for _, v in batched.trials] == pytest.approx(per, abs=1e-4)
    assert batched.steps == [max(steps[2 * k:2 * k + 2]) for k in range(4)]
    assert batched.sigma == pytest.approx(solo, rel=1e-5)
    if not budget:
        assert len(set(steps)) > 1, "some trials should settle before others"


def test_settling_stops_a_flat_trial_and_everything_at_the_budget():
    every, stop = settling(Search(settle_db=0.1, window=3, looks=10, budget=2.0), steps=100, members=3)
    assert every == 10
    names = [sorted(stop(10 * k, {"val": torch.tensor([20.0, 20.0 + 0.2 * k, math.nan if k == 1 else 0.0])}))
             for k in range(1, 21)]
    # look 1: member 2 is not finite; look 4: member 0 has moved < 0.1 dB over its last 3 looks (4 values);
    # member 1 rises 0.6 dB per 3 looks and never settles: member-steps spent after look k >= 4 are
    # 30 + 20 + 20 + 20 + 10 (k - 4), and the budget of 200 ends it at the look where another 10 would pass it
    stops = {i: n for i, n in enumerate(names, start=1) if n}
    assert stops == {1: [2], 4: [0], 15: [1]}
    # 4 members in two chunks of 2, fitted one after the other: each chunk gets half the budget (100
    # member-steps, 20 a look) and ends at its 5th look, where another 20 would pass it
    every, stop = settling(Search(settle_db=0.0, looks=10, budget=2.0), steps=100, members=4)
    for first in (0, 2):
        names = [sorted(stop(10 * k, {"val": torch.tensor([20.0 + k, 21.0 + k])}, first)) for k in range(1, 8)]
        assert {i: n for i, n in enumerate(names, start=1) if n} == {5: [0, 1]}


def test_the_automatic_sigma_is_reproducible_on_cpu():
    img = resize(load_image("sample:coffee"), 24)
    search = Search(lo=0.5, hi=3.0)
    first = auto_sigma(img, TINY, "every-other", seed=3, search=search)
    again = auto_sigma(img, TINY, "every-other", seed=3, search=search)
    assert again.sigma == first.sigma and again.trials == first.trials and again.steps == first.steps
    assert auto_sigma(img, TINY, "every-other", seed=4, search=search).trials != first.trials


def test_upsampled_render_has_factor_times_the_size_and_agrees_at_shared_centres():
    img = resize(load_image("sample:astronaut"), 16)
    result = fit_image(img, TINY, [0, 1], split="all")
    native = result.render_image(16, 16)
    for K in (3, 4):
        dense = render_dense(result, 16, 16, K)
        assert dense.shape == (2, 16 * K, 16 * K, 3)
    dense3 = render_dense(result, 16, 16, 3)
    np.testing.assert_allclose(dense3[:, 1::3, 1::3], native, atol=1e-5)    # odd K: centres coincide
    assert np.abs(dense3[:, 0::3, 0::3] - native).max() > 1e-3              # neighbours are other points
    g = dense_grid(16, 16, 4)
    np.testing.assert_allclose((g[1::4, 1::4] + g[2::4, 2::4]) / 2, grid(16, 16), atol=1e-6)


def test_baseline_interpolations_are_pixel_centre_aligned_on_a_linear_ramp():
    h, w, K = 8, 10, 4
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    low = np.repeat((0.1 + 0.03 * i + 0.05 * j)[..., None], 3, axis=2).astype(np.float32)
    I, J = np.meshgrid((np.arange(h * K) + 0.5) / K - 0.5, (np.arange(w * K) + 0.5) / K - 0.5, indexing="ij")
    exact = np.repeat((0.1 + 0.03 * I + 0.05 * J)[..., None], 3, axis=2)
    inner = (slice(2 * K, -2 * K), slice(2 * K, -2 * K))                 # away from the repeated edges
    for method in ("bicubic", "bilinear"):
        up = interpolate(low, K, method)
        assert up.shape == (h * K, w * K, 3)
        np.testing.assert_allclose(up[inner], exact[inner], atol=1e-6)
    np.testing.assert_array_equal(interpolate(low, K, "nearest"), np.repeat(np.repeat(low, K, 0), K, 1))
    np.testing.assert_allclose(downsample(exact.astype(np.float32), K), low, atol=1e-6)   # block means: centres
    s = scores(interpolate(low, K, "bicubic"), exact)
    assert s["psnr"] > 40 and 0.9 < s["ssim"] <= 1.0


def test_consistency_words_follow_the_numbers():
    rows = [{"depth": d, "loss": l, "image": im, "resolution": 32, "psnr_mean": base + bonus}
            for im, base in (("a", 20.0), ("b", 25.0), ("c", 30.0))
            for (d, l), bonus in {(2, "mse"): 0.0, (4, "mse"): 1.0, (2, "l1"): 0.5, (4, "l1"): 2.0}.items()]
    words = consistency(rows, ["depth", "loss"], ["image", "resolution"])
    assert "depth 4, loss l1; it is best on 3 of 3 inputs" in words[0]
    assert any("agree strongly: mean Spearman ρ 1.00" in w for w in words)
    assert any(w.startswith("loss") and "l1 wins on 3 of 3 inputs — consistent" in w for w in words)
    rows[-1]["psnr_mean"] = 30.9                              # image c: depth 4 / l1 falls behind depth 4 / mse
    words = consistency(rows, ["depth", "loss"], ["image", "resolution"])
    assert "best on 2 of 3 inputs" in words[0] and any(w.startswith("on c @ 32 the best is depth 4, loss mse") for w in words)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def _submit_and_read(tmp_path, spec: dict) -> dict:
    path = tmp_path / f"{spec['task']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    l335q_cmd("submit", path, check=True)
    out = l335q_cmd("results", "--task", spec["task"], "--format", "json", check=True)
    png = tmp_path / f"{spec['task']}.png"
    l335q_cmd("plot", "--task", spec["task"], "--out", png, check=True)
    assert png.stat().st_size > 1000
    return json.loads(out.stdout)


def test_inr_arch_end_to_end(tmp_path):
    table = _submit_and_read(tmp_path, {
        "task": "inr-arch", "image": ["sample:camera", "sample:coffee"], "resolution": [12, 16], "depth": [2, 3],
        "width": 16, "loss": ["mse", "l1"], "optimizer": "adam", "steps": 30, "seeds": "0-1", "device": "cpu"})
    assert len(table["rows"]) == 2 * 2 * 2 * 2
    assert all(r["seeds"] == 2 and r["psnr_mean"] > 5 for r in table["rows"])
    assert any("best configuration overall" in s for s in table["summary"])
    assert any("Spearman" in s for s in table["summary"])
    assert not any("bf16" in n for n in table["notes"])


def test_a_bf16_submission_says_so_in_its_table(tmp_path):
    table = _submit_and_read(tmp_path, {"task": "inr-arch", "image": "sample:camera", "resolution": 12, "depth": 2,
                                        "width": 16, "loss": "mse", "steps": 30, "seeds": "0-1", "device": "cpu",
                                        "precision": "bf16"})
    assert len(table["rows"]) == 1 and table["rows"][0]["psnr_mean"] > 5
    assert any(n.startswith("precision bf16: trained with a bfloat16 forward") for n in table["notes"])


def test_ffn_sigma_end_to_end_with_automatic_sigma(tmp_path):
    table = _submit_and_read(tmp_path, {
        "task": "ffn-sigma", "image": ["sample:sky", "sample:grass"], "sigma": [1, 8], "resolution": 16,
        "depth": 2, "width": 32, "features": 32, "steps": 60, "seeds": "0-1", "device": "cpu"})
    rows = table["rows"]
    assert {(r["image"], r["sigma"]) for r in rows} == {(im, s) for im in ("sample:sky", "sample:grass") for s in (1.0, 8.0)}
    for image in ("sample:sky", "sample:grass"):
        mine = [r for r in rows if r["image"] == image]
        assert sum(r["best"] for r in mine) == 1
        best = max(mine, key=lambda r: r["heldout_psnr_mean"])
        assert best["best"]
        assert mine[0]["sigma_auto"] > 0 and mine[0]["sigma_auto"] == mine[1]["sigma_auto"]
        assert mine[0]["loss_vs_best_db"] == pytest.approx(best["heldout_psnr_mean"] - mine[0]["heldout_psnr_auto"])
    assert any("automatic σ within 0.3 dB" in s for s in table["summary"])


def test_upsample_end_to_end_on_a_users_image_file(tmp_path):
    from PIL import Image
    y, x = np.mgrid[0:40, 0:40] / 40.0
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x + 2 * y), 0.5 + 0.4 * np.cos(5 * y), x * y], axis=-1)
    Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp_path / "mine.png")
    table = _submit_and_read(tmp_path, {
        "task": "upsample", "image": str(tmp_path / "mine.png"), "resolution": 32, "factor": 4, "sigma": 3,
        "depth": 2, "width": 32, "features": 32, "steps": 60, "seeds": "0-1", "device": "cpu"})
    rows = {r["method"]: r for r in table["rows"]}
    assert set(rows) == {"inr", "bicubic", "bilinear", "nearest"}
    assert all(r["factor"] == 4 and r["psnr"] > 10 and -1 <= r["ssim"] <= 1 for r in rows.values())
    assert rows["inr"]["seeds"] == 2 and rows["bicubic"]["seeds"] is None
    assert rows["bilinear"]["psnr"] > rows["nearest"]["psnr"]          # a smooth kernel beats blocks
    out = l335q_cmd("images", "--job", 1, "--out", tmp_path / "imgs", check=True)
    from l335q.plots import png_array
    up = png_array((tmp_path / "imgs" / "upsampled.png").read_bytes())
    assert up.shape == (128, 128, 3) and "upsampled" in out.stdout


def test_fit_command_with_automatic_sigma_and_upsampling(tmp_path):
    out = tmp_path / "up.png"
    proc = l335q_cmd("fit", "sample:coffee", "--resolution", 16, "--encoding", "gaussian", "--sigma", "auto",
                     "--features", 16, "--width", 16, "--depth", 2, "--steps", 20, "--split", "every-other",
                     "--upsample", 3, "--out", out, "--format", "json", "--device", "cpu", check=True)
    result = json.loads(proc.stdout)
    assert result["config"]["upsample"] == 3 and result["config"]["sigma"] > 0 and "auto σ" in proc.stderr
    from l335q.plots import png_array
    assert png_array(out.read_bytes()).shape == (48, 48, 3)
    bad = l335q_cmd("fit", "sample:coffee", "--sigma", "auto")                 # no Gaussian features
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --sigma auto needs --encoding gaussian"
