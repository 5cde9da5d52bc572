"""THE fitting loop for neural fields: S seeds of one configuration trained as one batched model.

The loss is the sum over seeds of each seed's mean loss, so each seed's gradient is exactly its solo
gradient; every optimiser here (Adam, AdamW, SGD, RMSprop) updates each parameter element on its own,
so a batch of seeds trains exactly as the seeds would one by one (``tests/test_fields.py`` checks it).
Seeds are split into chunks that fit the device's memory (estimated from activation sizes; on CUDA
against ``torch.cuda.mem_get_info``). A seed whose loss turns non-finite is flagged as diverged and
its PSNR is None; the other seeds carry on untouched (their parameters never mix).
PSNR = 10·log10(1 / MSE) on [0, 1] colours, computed on the render clamped to [0, 1].
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import UserError
from ..checkpoints import NO_CHECKPOINTS, Interrupted
from .encodings import ENCODINGS, encode, frequency_matrix
from .models import ACTIVATIONS, INITIALISERS, OUTPUTS, BatchedMLP

LOSSES = ("mse", "l1", "huber")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
RENDER_PIXELS = 65_536            # pixels per forward pass when rendering or scoring
CPU_BUDGET_BYTES = 3 * 2**30      # working memory assumed on a CPU device
CHECK_EVERY = 50                  # steps between looks at the checkpoint clock and the stop flag


@dataclass
class FieldConfig:
    depth: int = 4                 # linear layers
    width: int = 256
    activation: str = "relu"       # relu | sine (SIREN, w0 = 30)
    output: str = "sigmoid"        # sigmoid | relu (the practical's original)
    encoding: str = "none"         # none | basic | posenc | gaussian
    features: int = 256            # m (gaussian: m frequencies; posenc: m/2 per axis)
    sigma: float = 10.0            # σ of B ~ N(0, σ²) (gaussian), highest frequency (posenc)
    init: str = "default"
    loss: str = "mse"              # mse | l1 | huber
    optimizer: str = "adam"        # adam | adamw | sgd | rmsprop
    lr: float = 1e-3
    momentum: float = 0.9          # sgd and rmsprop
    steps: int = 1000
    batch_pixels: int | None = None   # None: full batch; N: N random training pixels per step (per seed)
    huber_delta: float = 0.1       # huber's switch from quadratic to linear, in [0, 1] colour units

    def check(self) -> "FieldConfig":
        for name, value, allowed in (("activation", self.activation, ACTIVATIONS), ("output", self.output, OUTPUTS),
                                     ("encoding", self.encoding, ENCODINGS), ("init", self.init, INITIALISERS),
                                     ("loss", self.loss, LOSSES), ("optimizer", self.optimizer, OPTIMIZERS)):
            if value not in allowed:
                raise UserError(f"{name} {value!r} is not one of {', '.join(allowed)}")
        for name in ("depth", "width", "features", "steps"):
            if int(getattr(self, name)) < (0 if name == "steps" else 1):
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.sigma, (int, float)) and math.isfinite(self.sigma) and self.sigma > 0):
            raise UserError(f"sigma must be a positive number, got {self.sigma!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"lr must be a positive number, got {self.lr!r}")
        if self.batch_pixels is not None and self.batch_pixels < 1:
            raise UserError(f"batch_pixels must be positive, got {self.batch_pixels!r}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)


def psnr(pred, target) -> float:
    """PSNR in dB of colours in [0, 1] over all of pred (any shape, e.g. an h x w x 3 image): 10·log10(1 / MSE)."""
    pred, target = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    return float(10.0 * torch.log10(1.0 / ((pred - target) ** 2).mean()))


def seed_psnr(pred, target) -> torch.Tensor:
    """PSNR per seed: pred (S, ...) against target of the same shape (or broadcastable), over all other axes."""
    pred, target = torch.as_tensor(pred, dtype=torch.float64), torch.as_tensor(target, dtype=torch.float64)
    return 10.0 * torch.log10(1.0 / ((pred - target) ** 2).flatten(1).mean(1))


# ----------------------------------------------------------------------------- one chunk of seeds: a field

class Field(torch.nn.Module):
    """Encoding + batched MLP for a list of seeds: coords (N, 2) -> colours (S, N, 3)."""

    def __init__(self, cfg: FieldConfig, seeds: list[int]):
        super().__init__()
        B = frequency_matrix(cfg.encoding, seeds, cfg.features, cfg.sigma)
        self.register_buffer("B", B)
        in_dim = 2 if B is None else 2 * B.shape[-1]
        self.mlp = BatchedMLP(seeds, in_dim, cfg.depth, cfg.width, cfg.activation, cfg.output, cfg.init)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        x = encode(coords, self.B)
        if x.shape[0] != len(self.mlp.seeds):
            x = x.expand(len(self.mlp.seeds), -1, -1)
        return self.mlp(x)

    @torch.no_grad()
    def render(self, coords: torch.Tensor) -> torch.Tensor:
        dev = self.mlp.weights[0].device
        coords = torch.as_tensor(coords, dtype=torch.float32)
        outs = [self(coords[i:i + RENDER_PIXELS].to(dev)).float().cpu() for i in range(0, len(coords), RENDER_PIXELS)]
        return torch.cat(outs, dim=1)


def make_optimizer(cfg: FieldConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum if cfg.momentum else 0.0)


def per_seed_loss(cfg: FieldConfig, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(S,) mean loss of each seed over its pixels and channels."""
    if cfg.loss == "mse":
        err = F.mse_loss(pred, target, reduction="none")
    elif cfg.loss == "l1":
        err = F.l1_loss(pred, target, reduction="none")
    else:
        err = F.huber_loss(pred, target, reduction="none", delta=cfg.huber_delta)
    return err.flatten(1).mean(1)


# ----------------------------------------------------------------------------- memory: how many seeds at once

def bytes_per_seed(cfg: FieldConfig, pixels: int, in_dim: int) -> int:
    """Rough peak bytes one seed needs per step: activations kept for backward + parameters and their state."""
    acts = pixels * (3 * in_dim + 3 * cfg.width * max(cfg.depth - 1, 0) + 12)
    params = in_dim * cfg.width + cfg.width * cfg.width * max(cfg.depth - 2, 0) + 3 * cfg.width
    return 4 * (acts + 5 * params)


def seed_chunk(cfg: FieldConfig, n_seeds: int, pixels: int, device: str, in_dim: int) -> int:
    if str(device).startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        budget = 0.7 * free
    else:
        budget = CPU_BUDGET_BYTES
    per = bytes_per_seed(cfg, pixels, in_dim)
    fit = int(budget // per)
    if fit < 1:
        raise UserError(f"one seed needs about {per / 2**30:.1f} GiB per step, more than the {budget / 2**30:.1f} GiB "
                        f"available on {device}: use batch_pixels, a smaller resolution or a smaller network")
    return max(1, min(n_seeds, fit))


# ----------------------------------------------------------------------------- fitting

@dataclass
class FitResult:
    seeds: list[int]
    config: FieldConfig
    train_psnr: list[float | None]                  # per seed; None where the seed diverged
    eval_psnr: dict[str, list[float | None]]        # per named evaluation set, per seed
    loss_steps: list[int]                           # the steps at which the loss was sampled
    loss_curve: list[list[float | None]]            # per seed: training loss at loss_steps
    diverged: list[bool]                            # per seed: its loss became non-finite
    seconds: float
    chunk: int                                      # seeds trained together per batched model
    fields: list[Field] = field(default_factory=list, repr=False)

    @property
    def heldout_psnr(self) -> list[float | None] | None:
        return self.eval_psnr.get("heldout")

    def render(self, coords) -> torch.Tensor:
        """Colours at any coordinates (N, 2) in [0, 1)²: (S, N, 3) on the CPU, clamped to [0, 1]."""
        return torch.cat([f.render(coords) for f in self.fields], dim=0).clamp(0.0, 1.0)

    def render_image(self, h: int, w: int) -> np.ndarray:
        """Every seed's field on an h x w grid: (S, h, w, 3) float32 in [0, 1]."""
        from ..data.images import grid

        return self.render(torch.from_numpy(grid(h, w).reshape(-1, 2))).reshape(len(self.seeds), h, w, 3).numpy()


def _fit_chunk(coords, rgb, cfg, seeds, device, evals, log_every, on_step, ckpt):
    torch_dev = torch.device(device)
    model = Field(cfg, seeds).to(torch_dev)
    opt = make_optimizer(cfg, model.parameters())
    S, N = len(seeds), coords.shape[0]
    coords_d, rgb_d = coords.to(torch_dev), rgb.to(torch_dev)
    gens = [torch.Generator().manual_seed(int(s) + 104_729) for s in seeds] if cfg.batch_pixels else []
    sampled, losses, first = [], [], 0
    stage = ckpt.stage()

    def save(step: int) -> None:
        stage.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                          "gens": [g.get_state() for g in gens], "sampled": sampled,
                          "losses": [t.cpu() for t in losses]})

    saved = stage.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for g, state in zip(gens, saved["gens"]):
            g.set_state(state)
        sampled, losses, first = list(saved["sampled"]), [t.to(torch_dev) for t in saved["losses"]], saved["step"]
    for step in range(first, cfg.steps):
        if step % CHECK_EVERY == 0 and step > first:
            stage.tick(step, cfg.steps, "step")
            if stage.due():
                save(step)
            if stage.stop_requested:
                raise Interrupted(f"stopped at step {step} of {cfg.steps}")
        if cfg.batch_pixels and cfg.batch_pixels < N:
            idx = torch.stack([torch.randint(N, (cfg.batch_pixels,), generator=g) for g in gens]).to(torch_dev)
            pred = model(coords_d[idx])
            target = rgb_d[idx]
        else:
            pred = model(coords_d)
            target = rgb_d.expand(S, -1, -1)
        loss = per_seed_loss(cfg, pred, target)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            sampled.append(step)
            losses.append(loss.detach())
            if on_step is not None:
                on_step(step, loss.detach())
    if first < cfg.steps and stage.due():
        save(cfg.steps)
    curve = torch.stack(losses).T.double().cpu() if losses else torch.empty(S, 0)
    out = model.render(coords).clamp(0.0, 1.0)
    train = seed_psnr(out, rgb.expand(S, -1, -1))
    scores = {name: seed_psnr(model.render(c).clamp(0.0, 1.0), t.expand(S, -1, -1)) for name, (c, t) in evals.items()}
    bad = ~torch.isfinite(out).flatten(1).all(1)
    if curve.numel():
        bad |= ~torch.isfinite(curve).all(1)
    return model, sampled, curve, train, scores, bad


def fit_pixels(coords, rgb, cfg: FieldConfig, seeds: list[int], device: str = "cpu",
               evals: dict | None = None, log_every: int | None = None, on_step=None,
               chunk: int | None = None, ckpt=NO_CHECKPOINTS) -> FitResult:
    """Fit S = len(seeds) fields to pixels (coords (N, 2) in [0, 1)², rgb (N, 3) in [0, 1]).

    evals: name -> (coords, rgb) scored after training (e.g. {"heldout": ...}). log_every: loss sampling
    interval in steps (default steps // 50). on_step(step, per-seed losses of the chunk) is called at sampled
    steps (once per chunk of seeds). The fitted fields stay on ``device`` for ``render`` (parameters only).
    chunk: seeds per batched model (default: as many as fit the device's memory).
    ckpt: a job's ``Checkpoints`` (each chunk is a stage: resumed from, saved every ``L335Q_CHECKPOINT_S`` and
    on a stop request, checked every ``CHECK_EVERY`` steps).
    """
    cfg.check()
    if not seeds:
        raise UserError("no seeds to fit")
    coords = torch.as_tensor(np.asarray(coords), dtype=torch.float32)
    rgb = torch.as_tensor(np.asarray(rgb), dtype=torch.float32)
    evals = {k: (torch.as_tensor(np.asarray(c), dtype=torch.float32), torch.as_tensor(np.asarray(t), dtype=torch.float32))
             for k, (c, t) in (evals or {}).items()}
    log_every = max(1, log_every or cfg.steps // 50)
    in_dim = 2 if cfg.encoding == "none" else 2 * frequency_matrix(cfg.encoding, [0], cfg.features, cfg.sigma).shape[-1]
    pixels = min(cfg.batch_pixels or coords.shape[0], coords.shape[0])
    chunk = min(chunk or len(seeds), seed_chunk(cfg, len(seeds), pixels, device, in_dim))
    t0 = time.perf_counter()
    fields, train, scores, curves, bad, steps = [], [], {k: [] for k in evals}, [], [], []
    for i in range(0, len(seeds), chunk):
        model, steps, curve, tr, sc, bd = _fit_chunk(coords, rgb, cfg, seeds[i:i + chunk], device, evals, log_every, on_step,
                                                    ckpt)
        fields.append(model)
        train.append(tr)
        curves.append(curve)
        bad.append(bd)
        for k in evals:
            scores[k].append(sc[k])
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    bad = torch.cat(bad).tolist()

    def per_seed(t: torch.Tensor) -> list[float | None]:
        return [None if b or not math.isfinite(v) else float(v) for v, b in zip(t.tolist(), bad)]

    curve = torch.cat(curves)
    return FitResult(seeds=list(seeds), config=cfg, train_psnr=per_seed(torch.cat(train)),
                     eval_psnr={k: per_seed(torch.cat(v)) for k, v in scores.items()}, loss_steps=list(steps),
                     loss_curve=[[v if math.isfinite(v) else None for v in row] for row in curve.tolist()],
                     diverged=bad, seconds=time.perf_counter() - t0, chunk=chunk, fields=fields)


def fit_image(img: np.ndarray, cfg: FieldConfig, seeds: list[int], device: str = "cpu", split: str = "all",
              log_every: int | None = None, on_step=None, chunk: int | None = None,
              ckpt=NO_CHECKPOINTS) -> FitResult:
    """Fit an H x W x 3 image; with ``split="every-other"`` train on [::2, ::2] and score ``heldout`` on the rest."""
    from ..data.images import split_pixels

    (coords, rgb), heldout = split_pixels(img, split)
    evals = {"heldout": heldout} if heldout is not None else {}
    return fit_pixels(coords, rgb, cfg, seeds, device, evals=evals, log_every=log_every, on_step=on_step,
                      chunk=chunk, ckpt=ckpt)
