"""A coordinate MLP for S seeds at once, and the initialisers the practical compares.

Layer k of all S networks is one weight tensor W_k (S, in, out) and one bias b_k (S, 1, out), applied with
``torch.baddbmm``: S independent networks in one batched product, no Python loop over seeds.
``depth`` counts the linear layers (depth 4 = 3 hidden activations + the output layer).

Initialisers (fan_in = in, fan_out = out of the layer; the bias is drawn right after its weight):
  default          exactly ``torch.nn.Linear.reset_parameters``: W ~ U(±gain·√(3/fan_in)) with the
                   leaky-ReLU gain for a = √5, i.e. U(±1/√fan_in); b ~ U(±1/√fan_in)
  kaiming-normal   W ~ N(0, 2/fan_in)                      (ReLU gain √2), b = 0
  kaiming-uniform  W ~ U(±√(6/fan_in))                     (ReLU gain √2), b = 0
  xavier-normal    W ~ N(0, 2/(fan_in + fan_out)),          b = 0
  xavier-uniform   W ~ U(±√(6/(fan_in + fan_out))),         b = 0
  siren            first layer W ~ U(±1/fan_in), later W ~ U(±√(6/fan_in)/w0) (Sitzmann et al. 2020),
                   b ~ U(±1/√fan_in) as nn.Linear (the reference SIREN code keeps its bias init)
  mean-colour      data-aware: the hidden layers exactly as ``default`` (same draws for the same seed); the output
                   layer W = 0 and b = the target's mean colour (its logit for a sigmoid output), so at
                   initialisation every seed renders the mean colour and every output unit's pre-activation is
                   positive on every pixel: no ReLU output starts dead (a channel whose mean is 0 starts at 0,
                   its target). Needs ``target_mean`` (the fit loop passes the training pixels' mean colour).
Every seed's weights come from its own ``torch.Generator().manual_seed(seed)`` drawn on the CPU, in
nn.Linear's (out, in) layout, layer by layer: a seed is the same network alone, in any batch, on any device,
and ``default`` equals ``torch.manual_seed(seed)`` followed by building the nn.Linear layers in order.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .encodings import encode, frequency_matrix
from .names import ACTIVATIONS, INITIALISERS, OUTPUTS  # noqa: F401  (re-exported)
from .pixels import Pixels, seed_psnr

SIREN_W0 = 30.0
RENDER_PIXELS = 65_536            # pixels per forward pass when rendering or scoring


def init_layer(init: str, fan_in: int, fan_out: int, gen: torch.Generator, first: bool = False,
               w0: float = SIREN_W0) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's (weight (out, in), bias (out,)) drawn from ``gen`` (``mean-colour`` draws as ``default``;
    ``BatchedMLP`` then sets its output layer from the data)."""
    w = torch.empty(fan_out, fan_in)
    b = torch.zeros(fan_out)
    linear_bound = 1.0 / math.sqrt(fan_in)
    if init in ("default", "mean-colour"):
        nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
        nn.init.uniform_(b, -linear_bound, linear_bound, generator=gen)
    elif init == "kaiming-normal":
        nn.init.kaiming_normal_(w, nonlinearity="relu", generator=gen)
    elif init == "kaiming-uniform":
        nn.init.kaiming_uniform_(w, nonlinearity="relu", generator=gen)
    elif init == "xavier-normal":
        nn.init.xavier_normal_(w, generator=gen)
    elif init == "xavier-uniform":
        nn.init.xavier_uniform_(w, generator=gen)
    elif init == "siren":
        bound = 1.0 / fan_in if first else math.sqrt(6.0 / fan_in) / w0
        nn.init.uniform_(w, -bound, bound, generator=gen)
        nn.init.uniform_(b, -linear_bound, linear_bound, generator=gen)
    else:
        raise ValueError(f"unknown initialiser {init!r} (known: {', '.join(INITIALISERS)})")
    return w, b


def layer_sizes(in_dim: int, depth: int, width: int, out_dim: int = 3) -> list[tuple[int, int]]:
    if depth < 1:
        raise ValueError("depth counts linear layers and must be at least 1")
    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    return list(zip(dims[:-1], dims[1:]))


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """b + x @ w for every seed: x (S, N, in), w (S, in, out), b (S, 1, out).

    A 2-wide input (raw coordinates) is two broadcast multiply-adds: CPU BLAS is slow for so thin a product.
    """
    if w.shape[1] <= 4:
        out = b
        for k in range(w.shape[1]):
            out = out + x[..., k:k + 1] * w[:, k:k + 1, :]
        return out
    return torch.baddbmm(b, x, w)


def mean_colour_output(target_mean, output: str, out_dim: int) -> torch.Tensor:
    """The ``mean-colour`` output bias: the target's mean colour, or its logit for a sigmoid output."""
    if target_mean is None:
        raise ValueError("initialiser 'mean-colour' needs the target's mean colour (target_mean)")
    m = torch.as_tensor(target_mean, dtype=torch.float32).flatten()
    if m.numel() != out_dim or not torch.isfinite(m).all():
        raise ValueError(f"target_mean must be {out_dim} finite numbers, got {m.tolist()}")
    m = m.clamp(0.0, 1.0)
    return torch.logit(m.clamp(1e-3, 1 - 1e-3)) if output == "sigmoid" else m


def per_member(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` for an elementwise ``fn``, computed on each member's slice x[i] on its own on the CPU: exactly
    the values of that member alone. PyTorch's CPU kernel for some ops (``torch.sigmoid``) computes the
    vectorised body of a tensor with a SIMD approximation and its tail (< 2 vector widths) with the scalar
    function, which differ in the last bits: in one (S, ...) tensor a member's values would depend on where it
    sits. A slice has the numel of the member alone, hence the same body/tail split and parallel chunks; its
    own autograd node keeps the backward per member too. On CUDA (no body/tail split) one op for all."""
    if x.device.type != "cpu" or x.shape[0] == 1:
        return fn(x)
    return torch.stack([fn(m) for m in x.unbind(0)])


class BatchedMLP(nn.Module):
    """S coordinate MLPs as one module: input (S, N, in) -> output (S, N, out).

    ``target_mean`` (out_dim colours in [0, 1], or (S, out_dim): one per seed) is read only by the data-aware
    ``mean-colour`` initialiser.
    """

    def __init__(self, seeds: list[int], in_dim: int, depth: int = 4, width: int = 256, activation: str = "relu",
                 output: str = "sigmoid", init: str = "default", out_dim: int = 3, w0: float = SIREN_W0,
                 target_mean=None):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        if output not in OUTPUTS:
            raise ValueError(f"unknown output {output!r} (known: {', '.join(OUTPUTS)})")
        self.seeds, self.activation, self.output, self.w0 = list(seeds), activation, output, w0
        sizes = layer_sizes(in_dim, depth, width, out_dim)
        per_seed = []
        for s in self.seeds:
            gen = torch.Generator().manual_seed(int(s))
            per_seed.append([init_layer(init, fi, fo, gen, first=(k == 0), w0=w0) for k, (fi, fo) in enumerate(sizes)])
        if init == "mean-colour":
            means = torch.as_tensor(target_mean, dtype=torch.float32) if target_mean is not None else None
            for i, layers in enumerate(per_seed):     # one mean for every seed, or one per seed (S, out_dim)
                mean = means[i] if means is not None and means.dim() == 2 else means
                layers[-1] = (torch.zeros_like(layers[-1][0]), mean_colour_output(mean, output, out_dim))
        # (S, in, out) weights and (S, 1, out) biases, layer by layer
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.stack([layers[k][0].t() for layers in per_seed]).contiguous()) for k in range(len(sizes))])
        self.biases = nn.ParameterList(
            [nn.Parameter(torch.stack([layers[k][1] for layers in per_seed]).unsqueeze(1)) for k in range(len(sizes))])

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer's activations (S, N, width)."""
        for w, b in zip(self.weights[:-1], self.biases[:-1]):
            x = linear(x, w, b)
            x = torch.relu_(x) if self.activation == "relu" else torch.sin(self.w0 * x)  # in place: no second buffer
        return x

    def pre_output(self, x: torch.Tensor) -> torch.Tensor:
        """The output layer before its activation (S, N, out): a ReLU output unit <= 0 on every pixel is dead."""
        return linear(self.hidden(x), self.weights[-1], self.biases[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre_output(x)
        return per_member(torch.sigmoid, x) if self.output == "sigmoid" else torch.relu(x)


class Field(torch.nn.Module):
    """Encoding + batched MLP for a list of seeds: coords (N, 2), or (S, N, 2) one set per member -> colours
    (S, N, 3). sigmas: one σ per member (default: cfg.sigma for all); a seed listed twice with two σ gives two
    members with the same weights and B₀, differing in σ only. ``target_mean``: the training pixels' mean
    colour (3,), or one per member (S, 3), for the data-aware initialisers."""

    def __init__(self, cfg, seeds: list[int], sigmas: list[float] | None = None, target_mean=None):
        super().__init__()
        B = frequency_matrix(cfg.encoding, seeds, cfg.features, cfg.sigma if sigmas is None else sigmas)
        self.register_buffer("B", B)
        in_dim = 2 if B is None else 2 * B.shape[-1]
        self.mlp = BatchedMLP(seeds, in_dim, cfg.depth, cfg.width, cfg.activation, cfg.output, cfg.init,
                              target_mean=target_mean)

    def features(self, coords: torch.Tensor) -> torch.Tensor:
        """The MLP's input for every member: (S, N, d)."""
        x = encode(coords, self.B)
        return x if x.shape[0] == len(self.mlp.seeds) else x.expand(len(self.mlp.seeds), -1, -1)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.features(coords))

    @torch.no_grad()
    def render(self, coords: torch.Tensor) -> torch.Tensor:
        dev = self.mlp.weights[0].device
        coords = torch.as_tensor(coords, dtype=torch.float32)
        outs = [self(coords[..., i:i + RENDER_PIXELS, :].to(dev)).float().cpu()
                for i in range(0, coords.shape[-2], RENDER_PIXELS)]
        return torch.cat(outs, dim=1)

    @torch.no_grad()
    def score(self, pix: Pixels, x: torch.Tensor | None = None) -> torch.Tensor:
        """PSNR per member on ``pix`` (the render clamped to [0, 1]); x: ``features(pix.coords)`` if at hand."""
        out = self.render(pix.coords) if x is None else self.mlp(x).float().cpu()
        return seed_psnr(out.clamp(0.0, 1.0), pix.target(len(self.mlp.seeds)), pix.weight)

    def members(self, keep: list[int]) -> "Field":
        """A copy holding only the members at positions ``keep`` (parameters and B copied, not shared)."""
        sub = copy.deepcopy(self)
        idx = torch.tensor(keep, device=self.mlp.weights[0].device)
        for params in (sub.mlp.weights, sub.mlp.biases):
            for k, p in enumerate(params):
                params[k] = nn.Parameter(p.detach()[idx].clone())
        if self.B is not None:
            sub.B = self.B[idx].clone()
        sub.mlp.seeds = [self.mlp.seeds[i] for i in keep]
        return sub

    @torch.no_grad()
    def put(self, other: "Field", rows: list[int], at: list[int]) -> None:
        """Copy the parameters of ``other``'s members ``rows`` into this field's members ``at``."""
        src, dst = torch.tensor(rows), torch.tensor(at)
        for mine, theirs in zip(self.parameters(), other.parameters()):
            mine[dst.to(mine.device)] = theirs[src.to(theirs.device)]
