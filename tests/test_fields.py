"""The neural-field engine: initialisers, encodings, batched == one-by-one, PSNR, divergence, `l335q fit`,
and an inr-init submission run by a real worker against the real Redis and PostgreSQL."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from l335q.data.images import load_image, resize
from l335q.fields.encodings import encode, frequency_matrix
from l335q.data.images import split_pixels
from l335q.fields.engine import FieldConfig, fit_image, fit_pixels, psnr, seed_psnr
from l335q.fields.models import INITIALISERS, SIREN_W0, BatchedMLP
from tests.conftest import l335q_cmd

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny():
    return resize(load_image("sample:camera"), 16)


# ----------------------------------------------------------------------------- initialisers

def expected(init: str, k: int, fan_in: int, fan_out: int) -> tuple[str, float, str, float]:
    """(weight law, its bound or std, bias law, its bound) for layer k, straight from the formulas."""
    lin = 1 / math.sqrt(fan_in)
    return {
        "default": ("uniform", lin, "uniform", lin),
        "kaiming-normal": ("normal", math.sqrt(2 / fan_in), "zero", 0.0),
        "kaiming-uniform": ("uniform", math.sqrt(6 / fan_in), "zero", 0.0),
        "xavier-normal": ("normal", math.sqrt(2 / (fan_in + fan_out)), "zero", 0.0),
        "xavier-uniform": ("uniform", math.sqrt(6 / (fan_in + fan_out)), "zero", 0.0),
        "siren": ("uniform", 1 / fan_in if k == 0 else math.sqrt(6 / fan_in) / SIREN_W0, "uniform", lin),
        "mean-colour": ("uniform", lin, "uniform", lin) if fan_out >= 100 else ("zero", 0.0, "target", 0.0),
    }[init]


def check_law(values: torch.Tensor, law: str, scale: float, what: str):
    v = values.double().flatten()
    if law == "zero":
        assert torch.count_nonzero(v) == 0, what
        return
    if law == "uniform":
        assert v.abs().max() <= scale * (1 + 1e-6), what
        assert v.abs().max() >= 0.95 * scale, what
        std = scale / math.sqrt(3)
    else:
        std = scale
        assert abs(v.mean()) < 4 * std / math.sqrt(len(v)), what
    assert abs(v.std() / std - 1) < max(0.06, 5 / math.sqrt(len(v))), f"{what}: std {v.std():.4g} vs {std:.4g}"


@pytest.mark.parametrize("init", INITIALISERS)
def test_initialiser_matches_its_formula_layer_by_layer(init):
    target = torch.tensor([0.2, 0.5, 0.7])
    mlp = BatchedMLP(seeds=[0, 1], in_dim=64, depth=4, width=128, init=init, activation="sine" if init == "siren" else "relu",
                     output="relu", target_mean=target)
    sizes = [(64, 128), (128, 128), (128, 128), (128, 3)]
    for k, ((fi, fo), w, b) in enumerate(zip(sizes, mlp.weights, mlp.biases)):
        assert w.shape == (2, fi, fo) and b.shape == (2, 1, fo)
        wlaw, wscale, blaw, bscale = expected(init, k, fi, fo)
        if fo >= 100:      # the 3-wide output layer is too small for statistics; its bounds are still checked
            check_law(w, wlaw, wscale, f"{init} layer {k} weights")
        else:
            assert w.abs().max() <= (wscale * (1 + 1e-6) if wlaw == "uniform" else 6 * wscale)
        if blaw == "target":
            assert torch.equal(b, target.expand(2, 1, 3))
            continue
        if blaw == "zero" or fo >= 100:
            check_law(b, blaw, bscale, f"{init} layer {k} biases")
        assert not torch.equal(w[0], w[1]), "two seeds drew the same weights"


def test_default_is_exactly_torch_nn_linear():
    mlp = BatchedMLP(seeds=[7, 3], in_dim=2, depth=3, width=32)
    torch.manual_seed(3)
    layers = [nn.Linear(2, 32), nn.Linear(32, 32), nn.Linear(32, 3)]
    for k, layer in enumerate(layers):
        assert torch.equal(mlp.weights[k][1], layer.weight.t())
        assert torch.equal(mlp.biases[k][1, 0], layer.bias)


def test_a_seed_is_the_same_network_alone_or_in_a_batch():
    alone = BatchedMLP(seeds=[5], in_dim=8, depth=3, width=16, init="xavier-normal")
    batch = BatchedMLP(seeds=[2, 5, 9], in_dim=8, depth=3, width=16, init="xavier-normal")
    for wa, wb in zip(alone.weights, batch.weights):
        assert torch.equal(wa[0], wb[1])
    assert torch.equal(frequency_matrix("gaussian", [5], 16, 3.0)[0], frequency_matrix("gaussian", [2, 5], 16, 3.0)[1])


def test_encodings():
    g = torch.tensor([[0.25, 0.5]])
    basic = encode(g, frequency_matrix("basic", [0]))
    assert torch.allclose(basic[0, 0], torch.tensor([0.0, -1.0, 1.0, 0.0]), atol=1e-6)   # cos 2πg, sin 2πg
    B = frequency_matrix("gaussian", [0, 1], features=4000, sigma=10.0)
    assert B.shape == (2, 2, 4000) and abs(B[0].std().item() - 10.0) < 0.5
    P = frequency_matrix("posenc", [0], features=8, sigma=16.0)[0]
    assert torch.allclose(P[0, :4], torch.tensor([1.0, 2.0, 4.0, 8.0])) and torch.count_nonzero(P[1, :4]) == 0
    assert encode(g, B).shape == (2, 1, 8000) and encode(g, None).shape == (1, 1, 2)


# ----------------------------------------------------------------------------- the engine

def test_psnr_on_known_inputs():
    target = torch.rand(2, 100, 3, dtype=torch.float64)
    assert seed_psnr(target + 0.1, target).tolist() == pytest.approx([20.0, 20.0], abs=1e-9)   # MSE 0.01
    assert psnr(target + 0.1, target) == pytest.approx(20.0, abs=1e-9)
    half = torch.zeros(2, 10, 3, dtype=torch.float64)
    half[1] = 0.5
    assert seed_psnr(half, torch.zeros_like(half)).tolist() == [math.inf, pytest.approx(10 * math.log10(4))]
    assert psnr(np.zeros((4, 4, 3)), np.ones((4, 4, 3))) == 0.0       # an image: one number, not one per row


@pytest.mark.parametrize("optimizer,batch_pixels", [("adam", None), ("sgd-momentum", 64), ("rmsprop", None)])
def test_batched_equals_one_by_one(tiny, optimizer, batch_pixels):
    cfg = FieldConfig(depth=3, width=32, encoding="gaussian", features=16, sigma=3.0, optimizer=optimizer,
                      lr=1e-2 if optimizer == "sgd-momentum" else 1e-3, steps=40, batch_pixels=batch_pixels, loss="huber")
    seeds = [0, 1, 2]
    batched = fit_image(tiny, cfg, seeds, split="every-other")
    chunked = fit_image(tiny, cfg, seeds, split="every-other", chunk=2)
    assert batched.chunk == 3 and chunked.chunk == 2
    for i, s in enumerate(seeds):
        solo = fit_image(tiny, cfg, [s], split="every-other")
        for other in (batched, chunked):
            assert other.train_psnr[i] == pytest.approx(solo.train_psnr[0], abs=1e-5)
            assert other.heldout_psnr[i] == pytest.approx(solo.heldout_psnr[0], abs=1e-5)
            np.testing.assert_allclose(other.loss_curve[i], solo.loss_curve[0], rtol=1e-5)
            np.testing.assert_allclose(other.render_image(8, 8)[i], solo.render_image(8, 8)[0], atol=1e-5)
    assert len({round(p, 3) for p in batched.train_psnr}) == 3, "seeds should differ"


def test_a_cpu_fits_big_seeds_one_by_one_with_the_same_numbers(tiny):
    """On a CPU, from ``CPU_SOLO_WORK`` (train pixels x width²) on, seeds train one after the other (they ran
    1.2-1.3x slower batched on 2 threads, research/cpu_seed_batching.md); below it, as one batched model. A
    requested chunk is kept, and the numbers are the same bit for bit either way."""
    from l335q.fields.engine import CPU_SOLO_WORK, seed_chunk

    small, big = FieldConfig(depth=2, width=64, steps=8), FieldConfig(depth=2, width=256, steps=8)
    assert 256 * 256 ** 2 == CPU_SOLO_WORK
    assert seed_chunk(small, 3, 256, "cpu", 2) == 3 and seed_chunk(big, 3, 255, "cpu", 2) == 3
    assert seed_chunk(big, 3, 256, "cpu", 2) == 1 and seed_chunk(big, 3, 256, "cpu", 2, requested=3) == 3
    solo, batched = fit_image(tiny, big, [0, 1, 2]), fit_image(tiny, big, [0, 1, 2], chunk=3)   # 16 x 16 pixels
    assert (solo.chunk, batched.chunk) == (1, 3)
    assert solo.train_psnr == batched.train_psnr and solo.loss_curve == batched.loss_curve


@pytest.mark.parametrize("threads", [1, 2])
def test_a_seed_group_gives_each_seed_exactly_its_alone_numbers(threads):
    """Bit for bit on the CPU with a sigmoid output, Gaussian Fourier features and a SIREN net, on one thread and
    two: a kernel whose vectorised body and scalar tail round differently (the sigmoid's) is run member by member.
    10 x 10 every-other: 25 training pixels (75 outputs), so tails fall inside members; the render's 36,003 outputs
    per member are split in parallel chunks on two threads."""
    img = resize(load_image("sample:camera"), 10)
    cfg = FieldConfig(depth=3, width=16, activation="sine", init="siren", output="sigmoid", encoding="gaussian",
                      features=16, sigma=3.0, steps=40)
    coords = torch.rand(12_001, 2, generator=torch.Generator().manual_seed(1))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        seeds = [0, 1, 2, 3]
        group = fit_image(img, cfg, seeds, split="every-other", log_every=5)
        rendered = group.render(coords)
        for i, s in enumerate(seeds):
            alone = fit_image(img, cfg, [s], split="every-other", log_every=5)
            assert (group.train_psnr[i], group.heldout_psnr[i]) == (alone.train_psnr[0], alone.heldout_psnr[0])
            assert group.loss_curve[i] == alone.loss_curve[0]
            assert torch.equal(rendered[i], alone.render(coords)[0])
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("batch_pixels,init", [(None, "default"), (16, "default"), (None, "mean-colour")])
def test_members_with_their_own_sigma_and_pixels_equal_solo_fits(tiny, batch_pixels, init):
    """One batched model whose members differ in σ and in the pixels they fit (sets of unequal size, padded
    and weighted) scores each member as that member fitted alone (mean-colour: each from its own pixels' mean)."""
    (c, r), _ = split_pixels(tiny, "all")
    sets = [np.arange(len(c)) % 3 != 0, np.arange(len(c)) % 3 == 0, np.arange(len(c)) % 2 == 0]
    cfg = FieldConfig(depth=3, width=24, encoding="gaussian", features=16, steps=30, loss="huber", batch_pixels=batch_pixels,
                      init=init)
    sigmas, seeds = [2.0, 3.0, 5.0], [7, 7, 8]
    both = fit_pixels([c[m] for m in sets], [r[m] for m in sets], cfg, seeds, sigmas=sigmas,
                      evals={"v": ([c[~m] for m in sets], [r[~m] for m in sets])})
    for i, m in enumerate(sets):
        solo = fit_pixels(c[m], r[m], FieldConfig(**{**cfg.as_dict(), "sigma": sigmas[i]}), [seeds[i]],
                          evals={"v": (c[~m], r[~m])})
        assert both.eval_psnr["v"][i] == pytest.approx(solo.eval_psnr["v"][0], abs=1e-5)
        assert both.train_psnr[i] == pytest.approx(solo.train_psnr[0], abs=1e-5)
    assert len({round(v, 3) for v in both.eval_psnr["v"]}) == 3


def test_members_that_stop_early_leave_the_others_as_they_were(tiny):
    """``until`` stops member 0 at step 20 and member 2 at 40: each equals a solo fit of that many steps,
    the others equal full-length solo fits; the stopped members' later loss samples are None. Split into
    chunks of 2 members (``until`` is told where each chunk starts) it gives the same."""
    (c, r), held = split_pixels(tiny, "every-other")
    cfg = FieldConfig(depth=3, width=24, encoding="gaussian", features=16, steps=60)
    sigmas = [1.0, 2.0, 4.0, 8.0]
    seen = []

    def until(step, scores, first):
        seen.append(scores["heldout"].clone())
        wanted = {0} if step == 20 else {2} if step == 40 else set()
        return {g - first for g in wanted if first <= g < first + len(scores["heldout"])}

    both = fit_pixels(c, r, cfg, [0] * 4, sigmas=sigmas, evals={"heldout": held}, until=(10, until), log_every=10)
    assert both.steps_run == [20, 60, 40, 60] and not any(both.diverged)
    assert seen[-1][0] == seen[1][0] and torch.isfinite(seen[-1]).all()      # stopped at 20: frozen since
    for i, sigma in enumerate(sigmas):
        solo = fit_pixels(c, r, FieldConfig(**{**cfg.as_dict(), "sigma": sigma, "steps": both.steps_run[i]}), [0],
                          evals={"heldout": held})
        assert both.heldout_psnr[i] == pytest.approx(solo.heldout_psnr[0], abs=1e-5)
        np.testing.assert_allclose(both.render_image(8, 8)[i], solo.render_image(8, 8)[0], atol=1e-5)
    assert both.loss_curve[0][-1] is None and both.loss_curve[1][-1] is not None
    chunked = fit_pixels(c, r, cfg, [0] * 4, sigmas=sigmas, evals={"heldout": held}, until=(10, until), chunk=2)
    assert chunked.chunk == 2 and chunked.steps_run == both.steps_run
    assert chunked.heldout_psnr == pytest.approx(both.heldout_psnr, abs=1e-5)


def test_reported_psnr_is_the_psnr_of_the_render(tiny):
    r = fit_image(tiny, FieldConfig(depth=2, width=16, steps=20), [4])
    img = r.render_image(16, 16)[0]
    assert r.train_psnr[0] == pytest.approx(10 * math.log10(1 / np.mean((img - tiny) ** 2)), abs=1e-4)


def test_gaussian_features_beat_raw_coordinates():
    img = resize(load_image("sample:astronaut"), 32)
    base = dict(depth=3, width=32, steps=100, lr=2e-3)
    raw = fit_image(img, FieldConfig(encoding="none", **base), [0])
    ffn = fit_image(img, FieldConfig(encoding="gaussian", features=32, sigma=8.0, **base), [0])
    assert ffn.train_psnr[0] > raw.train_psnr[0] + 5.0, (ffn.train_psnr, raw.train_psnr)


def test_a_diverging_seed_is_flagged_and_leaves_the_others_alone(tiny):
    cfg = FieldConfig(depth=4, width=32, steps=30, optimizer="sgd-momentum", lr=1e4, output="relu")
    r = fit_image(tiny, cfg, [0, 1, 2, 3])
    assert any(r.diverged) and not all(r.diverged), r.diverged
    for i, s in enumerate([0, 1, 2, 3]):
        if r.diverged[i]:
            assert r.train_psnr[i] is None
        else:
            assert r.train_psnr[i] == pytest.approx(fit_image(tiny, cfg, [s]).train_psnr[0], abs=1e-6)


def test_sgd_is_plain_sgd_and_sgd_momentum_uses_the_momentum(tiny):
    """The same names as classification (l335q.optim): momentum changes sgd-momentum's fit, never sgd's."""
    def fit(optimizer, momentum):
        cfg = FieldConfig(depth=2, width=16, steps=15, lr=0.5, optimizer=optimizer, momentum=momentum)
        return fit_image(tiny, cfg, [0]).train_psnr[0]

    assert fit("sgd", 0.0) == fit("sgd", 0.9)
    assert fit("sgd-momentum", 0.0) == pytest.approx(fit("sgd", 0.0), abs=1e-6)
    assert abs(fit("sgd-momentum", 0.9) - fit("sgd", 0.9)) > 0.01


def test_bad_config_is_a_user_error(tiny):
    from l335q import UserError

    with pytest.raises(UserError, match="optimizer"):
        fit_image(tiny, FieldConfig(optimizer="lbfgs"), [0])


@pytest.mark.parametrize("batch_pixels", [None, 40])
def test_bf16_precision_is_close_to_fp32_reproducible_and_exact_per_seed(tiny, batch_pixels):
    """``precision: bf16`` (the training forward under bfloat16 autocast): not the fp32 numbers but close to
    them, the same numbers on a second run, and a seed's own numbers in a batch (packs stay exact)."""
    from dataclasses import replace

    cfg = FieldConfig(depth=3, width=32, encoding="gaussian", features=16, sigma=3.0, steps=60,
                      batch_pixels=batch_pixels)
    bf16 = replace(cfg, precision="bf16")
    fp32, half, again = (fit_image(tiny, c, [0, 1, 2], split="every-other") for c in (cfg, bf16, bf16))
    solo = [fit_image(tiny, bf16, [s], split="every-other") for s in (0, 1, 2)]
    assert half.train_psnr != fp32.train_psnr and half.loss_curve != fp32.loss_curve
    assert half.train_psnr == pytest.approx(fp32.train_psnr, abs=0.3)
    assert half.heldout_psnr == pytest.approx(fp32.heldout_psnr, abs=0.3)
    assert again.train_psnr == half.train_psnr and again.loss_curve == half.loss_curve
    assert [s.train_psnr[0] for s in solo] == half.train_psnr
    assert [s.loss_curve[0] for s in solo] == half.loss_curve
    assert all(p.dtype == torch.float32 for f in half.fields for p in f.parameters())
    with pytest.raises(Exception, match="precision"):
        fit_image(tiny, replace(cfg, precision="fp16"), [0])


# ----------------------------------------------------------------------------- the CLI and the service

def test_fit_cli_json_and_png(tmp_path):
    out = tmp_path / "fit.png"
    p = l335q_cmd("fit", "sample:camera", "--resolution", "16", "--encoding", "gaussian", "--features", "16",
                  "--sigma", "4", "--depth", "3", "--width", "32", "--steps", "20", "--seeds", "0-1",
                  "--split", "every-other", "--format", "json", "--out", out)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert set(doc) == {"train_psnr", "heldout_psnr", "seconds", "config"}
    assert len(doc["train_psnr"]) == 2 and len(doc["heldout_psnr"]) == 2
    assert doc["config"]["sigma"] == 4.0 and doc["config"]["split"] == "every-other"
    from l335q.plots import png_array
    assert png_array(out.read_bytes()).shape == (16, 2 * 16 + 2, 3)      # two seeds side by side
    p = l335q_cmd("fit", "sample:camera", "--resolution", "8", "--steps", "2", "--format", "json")
    assert p.returncode == 0 and json.loads(p.stdout)["heldout_psnr"] is None
    args = ("fit", "sample:camera", "--resolution", "8", "--steps", "5", "--format", "json", "--device", "cpu")
    fp32, bf16 = (json.loads(l335q_cmd(*args, *extra).stdout) for extra in ((), ("--precision", "bf16")))
    assert (fp32["config"]["precision"], bf16["config"]["precision"]) == ("fp32", "bf16")
    assert bf16["train_psnr"] != fp32["train_psnr"]
    bad = l335q_cmd(*args, "--precision", "fp16")
    assert bad.returncode == 2 and "precision" in bad.stderr and bad.stdout == ""


def test_inr_init_through_a_real_worker(service_env, worker, tmp_path):
    from PIL import Image

    Image.fromarray((resize(load_image("sample:coffee"), 16) * 255).astype(np.uint8)).save(tmp_path / "mine.png")
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: inr-init\nimage: mine.png\nresolution: 12\ninitialiser: [default, kaiming-normal, mean-colour]\n"
                    "seeds: \"0-3\"\nseed_group: 2\nsteps: 15\nwidth: 16\ndepth: 3\n")
    q = service_env["L335Q_TEST_QUEUE"]
    p = l335q_cmd("submit", spec, "--queue", q, "--wait", env=service_env, timeout=300)
    assert p.returncode == 0, p.stderr
    p = l335q_cmd("results", "--task", "inr-init", "--format", "json", env=service_env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    rows = {r["initialiser"]: r for r in doc["rows"]}
    assert set(rows) == {"default", "kaiming-normal", "mean-colour"}
    passing = [name for name, r in rows.items() if r["frac_above_15"] == 1.0]
    (summary,) = doc["summary"]
    assert summary.startswith("above 15 dB for every seed: " if passing else "no initialiser stays above 15 dB")
    assert all((f"{name} (4 of 4 seeds" in summary) == (name in passing) for name in rows), summary
    for r in rows.values():
        assert r["seeds"] == 4 and r["psnr_min"] <= r["psnr_median"] <= r["psnr_max"]
        fails = round((1 - r["frac_above_15"]) * 4)
        assert r["verdict"] == ("> 15 dB for every seed" if fails == 0 else f"fails for {fails} of 4 seeds")
    out = tmp_path / "plot.png"
    p = l335q_cmd("plot", "--task", "inr-init", "--out", out, env=service_env)
    assert p.returncode == 0 and out.stat().st_size > 10_000, p.stderr
