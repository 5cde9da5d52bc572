"""A CNN designer for a parameter budget: 3 conv + 2 FC layers within ±1.5 % of N parameters.

The search space is what the practical's Task 1 asks the student to choose, in ``CNNConfig`` terms:
  * kernel size per conv layer from KERNELS, non-increasing with depth (large kernels early, if at all);
  * channels per conv layer from CHANNELS, non-decreasing, each at most double the one before;
  * a 2x2 max-pool after each conv or not (POOLS), 'same' or no padding;
  * BatchNorm and dropout as in ``base`` (cls-compare's DEFAULT_CNN unless told otherwise);
  * the hidden FC width is not searched but solved: the width that brings the total closest to N.
A design is kept when its total is within TOLERANCE of N and MIN_HIDDEN <= hidden <= flat features
(the FC part narrows, it does not widen). Parameters and FLOPs are counted analytically (fast) and
every design that is shown is built with ``build_cnn`` and checked against ``count_params`` of the real model.

Ranking: by FLOPs (multiply-adds x 2 per image, cheapest first), or with ``probe`` by the test accuracy
after a short training run through the one training engine.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from .. import UserError
from .names import DEFAULT_CNN, IMAGE_SIZE, IN_CHANNELS, NUM_CLASSES, CNNConfig

TOLERANCE = 0.015
KERNELS = (3, 5, 7)
CHANNELS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
POOLS = (1, 2)
MIN_HIDDEN = 32
PROBE_TRAIN = 4096       # training images a probe sees (the first N of the training set)
PROBE_STEPS = 256        # optimizer steps per probe (batch 64, Adam 1e-3)
PROBE_BATCH = 64
PROBE_TEST = 2000        # test images a probe is scored on
PROBE_MAX_FLOPS = 50e6   # designs a probe may pick by default (a probe of a 500 MFLOPs design takes long on a CPU)


@dataclass(frozen=True)
class Design:
    config: CNNConfig
    params: int
    flops: int               # per image, forward pass: 2 x multiply-adds of the conv and FC layers
    probe_acc: float | None = None

    def as_dict(self, budget: int) -> dict:
        return {"params": self.params, "off_budget": round((self.params - budget) / budget, 5),
                "flops": self.flops, "probe_acc": self.probe_acc, **self.config.to_dict(),
                "flat_features": self.config.flat_features, "describe": self.config.describe()}


def count(cfg: CNNConfig, hidden: int | None = None) -> tuple[int, int]:
    """(parameters, FLOPs per image) of ``cfg`` (with ``hidden`` instead of cfg.hidden if given), analytically."""
    hidden = cfg.hidden if hidden is None else hidden
    params = macs = 0
    c_in, side = IN_CHANNELS, IMAGE_SIZE
    for i, (c, k, p) in enumerate(zip(cfg.channels, cfg.kernels, cfg.pools)):
        side = side + 2 * cfg.padding(i) - k + 1
        params += c_in * c * k * k + c + (2 * c if cfg.batchnorm else 0)
        macs += c * side * side * c_in * k * k
        side, c_in = side // p, c
    flat = c_in * side * side
    params += flat * hidden + hidden + hidden * NUM_CLASSES + NUM_CLASSES
    macs += flat * hidden + hidden * NUM_CLASSES
    return params, 2 * macs


def _convs_without_hidden(cfg: CNNConfig) -> tuple[int, int]:
    """(parameters of everything but the hidden layer's units, parameters per hidden unit)."""
    with_one, _ = count(cfg, hidden=1)
    per_unit = cfg.flat_features + 1 + NUM_CLASSES
    return with_one - per_unit, per_unit


def _spaces():
    for kernels in itertools.product(KERNELS, repeat=3):
        if list(kernels) != sorted(kernels, reverse=True):
            continue
        for channels in itertools.product(CHANNELS, repeat=3):
            if not all(a <= b <= 2 * a for a, b in zip(channels, channels[1:])):
                continue
            for pools in itertools.product(POOLS, repeat=3):
                for same in (True, False):
                    yield kernels, channels, pools, same


def search(budget: int, base: CNNConfig = DEFAULT_CNN, tolerance: float = TOLERANCE) -> list[Design]:
    """Every design in the space within ``tolerance`` of ``budget``, cheapest (FLOPs) first."""
    if budget < 1000:
        raise UserError(f"budget {budget} is too small for a 3-conv + 2-FC network")
    found = []
    for kernels, channels, pools, same in _spaces():
        side, ok = IMAGE_SIZE, True
        for k, p in zip(kernels, pools):        # cheap shape check before building a config
            side = side + (2 * (k // 2) if same else 0) - k + 1
            if side < 1:
                ok = False
                break
            side //= p
        if not ok or side < 1:
            continue
        cfg = replace(base, channels=channels, kernels=kernels, pools=pools, same_padding=same, hidden=1)
        rest, per_unit = _convs_without_hidden(cfg)
        hidden = round((budget - rest) / per_unit)
        if not MIN_HIDDEN <= hidden <= cfg.flat_features:
            continue
        params, flops = count(cfg, hidden)
        if abs(params - budget) <= tolerance * budget:
            found.append(Design(replace(cfg, hidden=hidden), params, flops))
    found.sort(key=lambda d: (d.flops, abs(d.params - budget), d.config.describe()))
    return found


def verify(design: Design) -> list[dict]:
    """Build the design and return its per-layer arithmetic; the analytic count must be the real one."""
    from .models import build_model, count_params, param_table

    model = build_model("cnn", design.config, seed=0)
    real = count_params(model)
    if real != design.params:
        raise AssertionError(f"analytic count {design.params} != built model's {real} for {design.config.describe()}")
    return param_table(model)


def probe(designs: list[Design], device: str = "cpu", seed: int = 0, steps: int = PROBE_STEPS,
          train_images: int = PROBE_TRAIN, test_images: int = PROBE_TEST, log_fn=None) -> list[Design]:
    """Train each design briefly (Adam 1e-3, batch 64, about ``steps`` steps on the first ``train_images``
    training images) through the training engine; return them ranked by accuracy on the first
    ``test_images`` test images (best first; a diverged probe ranks last)."""
    from .engine import TrainConfig, train
    from .jobs import load_data
    from .models import build_model

    data = load_data({"train_subset": train_images, "test_subset": test_images}, device)
    epochs = max(1, round(steps * PROBE_BATCH / train_images))
    cfg = TrainConfig(epochs=epochs, batch_size=PROBE_BATCH, lr=1e-3, optimizer="adam", seed=seed, device=device)
    out = []
    for i, d in enumerate(designs, 1):
        history = train(build_model("cnn", d.config, seed=seed), data, cfg, log_fn=lambda m: None)
        acc = None if history.diverged or history.final is None else history.final.test_acc
        if log_fn:
            log_fn(f"probe {i}/{len(designs)}: {d.config.describe()}: test acc {acc}")
        out.append(replace(d, probe_acc=acc))
    return sorted(out, key=lambda d: (d.probe_acc is None, -(d.probe_acc or 0.0), d.flops))


def spread(designs: list[Design], n: int) -> list[Design]:
    """``n`` designs evenly spaced over a ranked list (first and last included): a probe sees cheap and costly."""
    if n >= len(designs):
        return list(designs)
    if n == 1:
        return designs[:1]
    return [designs[round(i * (len(designs) - 1) / (n - 1))] for i in range(n)]


def rank_of(designs: list[Design], cfg: CNNConfig) -> int | None:
    """1-based position of ``cfg`` in ``designs`` (None if absent)."""
    return next((i + 1 for i, d in enumerate(designs) if d.config == cfg), None)


# ----------------------------------------------------------------------------- what `l335q design` prints

def designs_for(budget: int, conv: int = 3, fc: int = 2, top: int = 10, probe_n: int = 0,
                max_flops: float | None = None, device: str = "cpu", log_fn=None) -> tuple[list[dict], list[dict], int]:
    """(answers as dicts, the first answer's per-layer arithmetic, how many designs were ranked).

    Answers: the ``top`` best by the ranking (``top=0``: all), each with its ``rank``; cls-compare's
    DEFAULT_CNN is added (``default_cnn: true``) with its own rank whenever it is among the ranked designs,
    so its place is always visible. With ``probe_n``, that many designs spread evenly over the FLOPs order
    (up to ``max_flops``, by default PROBE_MAX_FLOPS) are trained briefly and ranked by test accuracy.
    """
    if (conv, fc) != (3, 2):
        raise UserError(f"--conv {conv} --fc {fc}: the designer builds CNNConfig networks, which have exactly "
                        "3 conv and 2 FC layers (the practical's Task 1)")
    if top < 0 or probe_n < 0 or (max_flops is not None and max_flops <= 0):
        raise UserError("--top and --probe-designs must be >= 0 and --max-mflops positive")
    if probe_n and max_flops is None:
        max_flops = PROBE_MAX_FLOPS
    found = [d for d in search(budget) if max_flops is None or d.flops <= max_flops]
    if not found:
        raise UserError(f"no 3-conv + 2-FC design within ±{100 * TOLERANCE:g} % of {budget:,} parameters"
                        + (f" and {max_flops / 1e6:g} MFLOPs" if max_flops else ""))
    ranked = probe(spread(found, probe_n), device=device, log_fn=log_fn) if probe_n else found
    shown = ranked if top == 0 else ranked[:top]
    answers = [{"rank": i + 1, "default_cnn": d.config == DEFAULT_CNN, **d.as_dict(budget)}
               for i, d in enumerate(shown)]
    at = rank_of(ranked, DEFAULT_CNN)
    listed = list(shown)
    if at is not None and at > len(shown):     # cls-compare's CNN is always listed, at its own rank
        answers.append({"rank": at, "default_cnn": True, **ranked[at - 1].as_dict(budget)})
        listed.append(ranked[at - 1])
    for d in listed:
        verify(d)
    return answers, verify(ranked[0]), len(ranked)


def format_designs(answers: list[dict], arithmetic: list[dict], total: int, budget: int, by: str) -> str:
    from .models import format_table

    head = f"{'rank':>5}  {'params':>9}  {'off':>7}  {'MFLOPs':>8}" + ("  probe acc" if by == "probe" else "")
    what = (f"{total} designs spread over the FLOPs order, each trained {PROBE_STEPS} steps on {PROBE_TRAIN} images, "
            f"ranked by accuracy on {PROBE_TEST} test images" if by == "probe" else
            f"{total} designs ranked by FLOPs per image, cheapest first")
    lines = [f"3 conv + 2 FC layers within ±{100 * TOLERANCE:g} % of {budget:,} parameters: {what}", head]
    for i, a in enumerate(answers):
        if i and a["rank"] > answers[i - 1]["rank"] + 1:
            lines.append(f"{'...':>5}")
        row = f"{a['rank']:>5}  {a['params']:>9,}  {100 * a['off_budget']:>+6.2f}%  {a['flops'] / 1e6:>8.2f}"
        if by == "probe":
            acc = "diverged" if a["probe_acc"] is None else f"{100 * a['probe_acc']:.1f} %"
            row += f"  {acc:>9}"
        lines.append(row + f"  {a['describe']}" + ("   <- cls-compare's CNN" if a["default_cnn"] else ""))
    lines += ["", "design #1, layer by layer (built model, real parameter count):", *format_table(arithmetic)]
    return "\n".join(lines)
