"""The practical's two classifiers and their parameter arithmetic.

* ``build_fcn()``: the PyTorch Quickstart net (Flatten, 784→512, ReLU, 512→512, ReLU, 512→10),
  exactly 669,706 parameters.
* ``build_cnn(cfg)``: 3 conv layers (each conv → [BatchNorm] → ReLU → [max-pool]) and 2 FC layers,
  described by a frozen ``CNNConfig``. ``DEFAULT_CNN`` is parameter-matched to the FCN (within ±1.5 %).
* ``param_table(model)``: one row per layer with its arithmetic, e.g. ``conv2  32·64·3·3 + 64``;
  the rows add up to ``sum(p.numel())``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict

import torch
from torch import nn

from .. import UserError
from .names import (DEFAULT_CNN, FCN_PARAMS, IMAGE_SIZE, IN_CHANNELS, MODELS, NUM_CLASSES,  # noqa: F401  (re-exported)
                    CNNConfig)

def build_fcn() -> nn.Sequential:
    """The PyTorch Quickstart ``NeuralNetwork``: 784 → 512 → 512 → 10 with ReLUs."""
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 512)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(512, 512)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(512, NUM_CLASSES)),
    ]))


class CNN(nn.Module):
    def __init__(self, cfg: CNNConfig = DEFAULT_CNN):
        super().__init__()
        self.config = cfg
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = IN_CHANNELS
        for i, (c, k, p) in enumerate(zip(cfg.channels, cfg.kernels, cfg.pools), start=1):
            layers[f"conv{i}"] = nn.Conv2d(c_in, c, k, padding=cfg.padding(i - 1))
            if cfg.batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm2d(c)
            layers[f"relu{i}"] = nn.ReLU()
            if p > 1:
                layers[f"pool{i}"] = nn.MaxPool2d(p)
            c_in = c
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()), ("drop1", nn.Dropout(cfg.dropout)),
            ("fc1", nn.Linear(cfg.flat_features, cfg.hidden)), ("relu", nn.ReLU()), ("drop2", nn.Dropout(cfg.dropout)),
            ("fc2", nn.Linear(cfg.hidden, NUM_CLASSES)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def conv_names(self) -> list[str]:
        return [n for n, m in self.features.named_children() if isinstance(m, nn.Conv2d)]

    @torch.no_grad()
    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """conv name -> its activation maps (after BatchNorm and ReLU, before pooling), N x C x H x W."""
        maps, current = {}, None
        for name, layer in self.features.named_children():
            x = layer(x)
            if isinstance(layer, nn.Conv2d):
                current = name
            elif isinstance(layer, nn.ReLU):
                maps[current] = x
        return maps


def build_cnn(cfg: CNNConfig = DEFAULT_CNN) -> CNN:
    return CNN(cfg)


def build_model(name: str, cnn_config: CNNConfig | None = None, seed: int | None = None) -> nn.Module:
    """``fcn`` or ``cnn``; with ``seed`` the initial weights come from that seed (same on every device)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return build_fcn() if name == "fcn" else build_cnn(cnn_config or DEFAULT_CNN)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def hidden_for_budget(cfg: CNNConfig, budget: int = FCN_PARAMS) -> int:
    """The hidden FC width that brings ``cfg`` closest to ``budget`` parameters."""
    rest = count_params(build_model("cnn", CNNConfig(**{**asdict(cfg), "hidden": 1}), seed=0))  # seeded: no RNG drawn
    per_unit = cfg.flat_features + 1 + NUM_CLASSES          # one hidden unit: its weights in, bias, weights out
    return max(1, round((budget - (rest - per_unit)) / per_unit))


# ----------------------------------------------------------------------------- parameter arithmetic

def _row(name: str, module: nn.Module) -> dict | None:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        terms = f"{module.in_channels}·{module.out_channels}·{kh}·{kw}"
    elif isinstance(module, nn.Linear):
        terms = f"{module.in_features}·{module.out_features}"
    elif isinstance(module, nn.BatchNorm2d):
        terms = f"2·{module.num_features}"              # weight (γ) and bias (β); running stats are buffers
    else:
        return None
    bias = getattr(module, "bias", None)
    if bias is not None and not isinstance(module, nn.BatchNorm2d):
        terms += f" + {bias.numel()}"
    return {"layer": name, "formula": terms, "params": sum(p.numel() for p in module.parameters(recurse=False))}


def param_table(model: nn.Module) -> list[dict]:
    """One row per layer with parameters: ``{"layer", "formula", "params"}``; rows sum to the model's count."""
    rows = []
    for full_name, module in model.named_modules():
        row = _row(full_name.split(".")[-1], module)
        if row is not None:
            rows.append(row)
    covered = sum(r["params"] for r in rows)
    if covered != count_params(model):   # a layer type this table does not know: say so rather than mislead
        raise ValueError(f"param_table covers {covered} of {count_params(model)} parameters")
    return rows


def format_table(rows: list[dict]) -> list[str]:
    """Text lines like ``conv2  32·64·3·3 + 64 = 18,496`` aligned, ending with the total."""
    wl = max(len(r["layer"]) for r in rows)
    wf = max(len(r["formula"]) for r in rows)
    lines = [f"{r['layer']:<{wl}}  {r['formula']:<{wf}} = {r['params']:>9,}" for r in rows]
    lines.append(f"{'total':<{wl}}  {'':<{wf}}   {sum(r['params'] for r in rows):>9,}")
    return lines
