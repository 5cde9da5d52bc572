"""The practical's two classifiers and their parameter arithmetic.

* ``build_fcn()``: the PyTorch Quickstart net (Flatten, 784→512, ReLU, 512→512, ReLU, 512→10),
  exactly 669,706 parameters.
* ``build_cnn(cfg)``: 3 conv layers (each conv → [BatchNorm] → ReLU → [max-pool]) and 2 FC layers,
  described by a frozen ``CNNConfig``. ``DEFAULT_CNN`` is parameter-matched to the FCN (±2 %).
* ``param_table(model)``: one row per layer with its arithmetic, e.g. ``conv2  32·64·3·3 + 64``;
  the rows add up to ``sum(p.numel())``.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .. import UserError
from .names import MODELS

IMAGE_SIZE = 28          # Fashion-MNIST: 1 x 28 x 28 grey images, 10 classes
IN_CHANNELS = 1
NUM_CLASSES = 10
FCN_PARAMS = 669_706     # the Quickstart net, the budget the CNN is matched to


def build_fcn() -> nn.Sequential:
    """The PyTorch Quickstart ``NeuralNetwork``: 784 → 512 → 512 → 10 with ReLUs."""
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 512)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(512, 512)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(512, NUM_CLASSES)),
    ]))


@dataclass(frozen=True)
class CNNConfig:
    """Three conv blocks (conv k×k, 'same' or no padding, optional BatchNorm, ReLU, optional max-pool)
    followed by FC(flat → hidden), ReLU, dropout, FC(hidden → 10)."""
    channels: tuple[int, int, int] = (32, 64, 128)
    kernels: tuple[int, int, int] = (3, 3, 3)
    same_padding: bool = True          # padding k//2 keeps the spatial size through each conv
    pools: tuple[int, int, int] = (2, 2, 2)   # max-pool size (= stride) after each conv; 1 = no pooling
    hidden: int = 496                  # width of the hidden FC layer
    batchnorm: bool = True             # BatchNorm2d after each conv (2·C parameters each)
    dropout: float = 0.3               # before each FC layer; no parameters

    def __post_init__(self):
        for name in ("channels", "kernels", "pools"):
            value = getattr(self, name)
            if len(value) != 3 or any(int(v) < 1 for v in value):
                raise UserError(f"CNN {name} must be three positive integers, got {value!r}")
            object.__setattr__(self, name, tuple(int(v) for v in value))
        if self.hidden < 1 or not 0.0 <= self.dropout < 1.0:
            raise UserError(f"CNN hidden must be >= 1 and dropout in [0, 1), got {self.hidden}, {self.dropout}")
        if self.spatial_sizes()[-1] < 1:
            raise UserError(f"CNN {self.describe()} shrinks a {IMAGE_SIZE}x{IMAGE_SIZE} image to nothing")

    def padding(self, i: int) -> int:
        return self.kernels[i] // 2 if self.same_padding else 0

    def spatial_sizes(self) -> list[int]:
        """Side length of the feature maps after each block (conv, then pool), starting from 28."""
        sizes, s = [], IMAGE_SIZE
        for i in range(3):
            s = s + 2 * self.padding(i) - self.kernels[i] + 1
            s = s // self.pools[i] if s > 0 else s
            sizes.append(s)
        return sizes

    @property
    def flat_features(self) -> int:
        return self.channels[-1] * self.spatial_sizes()[-1] ** 2

    def describe(self) -> str:
        blocks = []
        for i, (c, k, p) in enumerate(zip(self.channels, self.kernels, self.pools)):
            pad = "same" if self.same_padding else "valid"
            blocks.append(f"conv{k}x{k}-{c} {pad}" + (" bn" if self.batchnorm else "") + (f" pool{p}" if p > 1 else ""))
        s = self.spatial_sizes()[-1]
        return (" | ".join(blocks) + f" | flatten {self.channels[-1]}x{s}x{s}={self.flat_features}"
                f" | fc {self.hidden} (dropout {self.dropout:g}) | fc {NUM_CLASSES}")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "CNNConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


# The CNN of cls-compare. Three 3x3 'same' conv layers doubling the channels (32-64-128) with a 2x2 max-pool
# after each (28 → 14 → 7 → 3) keep the conv part small (93,120 parameters incl. BatchNorm) and cheap, so most
# of the budget goes to the 1152 → 496 hidden FC layer, sized to land on the FCN's 669,706 (+0.04 %).
# BatchNorm steadies Adam at lr 1e-3; dropout 0.3 before the FC layers holds back the train-test gap.
DEFAULT_CNN = CNNConfig()


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
    rest = count_params(build_cnn(CNNConfig(**{**asdict(cfg), "hidden": 1})))
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
