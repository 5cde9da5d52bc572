"""THE fitting loop for neural fields: S seeds of one configuration trained as one batched model.

The loss is the sum over seeds of each seed's mean loss, so each seed's gradient is exactly its solo
gradient; every optimiser here (Adam, AdamW, SGD, RMSprop) updates each parameter element on its own,
so a batch of seeds trains exactly as the seeds would one by one (``tests/test_fields.py`` checks it; on the CPU
bit for bit: the sigmoid output is computed member by member, ``models.per_member``).
Seeds are split into chunks that fit the device's memory (estimated from activation sizes; on CUDA
against ``torch.cuda.mem_get_info``). A seed whose loss turns non-finite is flagged as diverged and
its PSNR is None; the other seeds carry on untouched (their parameters never mix).
PSNR = 10·log10(1 / MSE) on [0, 1] colours, computed on the render clamped to [0, 1].
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from .. import UserError
from ..checkpoints import NO_CHECKPOINTS, Interrupted
from ..graphs import Steps, make_capturable
from ..optim import MOMENTUM, OPTIMIZERS, make_optimizer
from .encodings import frequency_matrix
from .memory import CPU_SOLO_WORK, bytes_per_seed, out_of_memory, release, seed_chunk  # noqa: F401  (the engine's interface)
from .models import Field
from .names import ACTIVATIONS, ENCODINGS, INITIALISERS, LOSSES, OUTPUTS, PRECISIONS
from .pixels import Pixels, psnr, seed_psnr  # noqa: F401  (psnr: part of the engine's interface)

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
    optimizer: str = "adam"        # one of optim.OPTIMIZERS
    lr: float = 1e-3
    momentum: float = MOMENTUM     # sgd-momentum and rmsprop
    steps: int = 1000
    batch_pixels: int | None = None   # None: full batch; N: N random training pixels per step (per seed)
    huber_delta: float = 0.1       # huber's switch from quadratic to linear, in [0, 1] colour units
    precision: str = "fp32"        # the training forward: fp32 | bf16 (autocast; the loss, parameters, optimiser
                                   # and every score stay fp32; not the fp32 numbers, see _step)

    def check(self) -> "FieldConfig":
        for name, value, allowed in (("activation", self.activation, ACTIVATIONS), ("output", self.output, OUTPUTS),
                                     ("encoding", self.encoding, ENCODINGS), ("init", self.init, INITIALISERS),
                                     ("loss", self.loss, LOSSES), ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("precision", self.precision, PRECISIONS)):
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


# ----------------------------------------------------------------------------- loss

def per_seed_loss(cfg: FieldConfig, pred: torch.Tensor, target: torch.Tensor, weight=None) -> torch.Tensor:
    """(S,) mean loss of each seed over its pixels and channels (weight (S, N): see ``Pixels``)."""
    if cfg.loss == "mse":
        err = F.mse_loss(pred, target, reduction="none")
    elif cfg.loss == "l1":
        err = F.l1_loss(pred, target, reduction="none")
    else:
        err = F.huber_loss(pred, target, reduction="none", delta=cfg.huber_delta)
    return err.flatten(1).mean(1) if weight is None else (err.mean(2) * weight).sum(1)


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
    steps_run: list[int] = field(default_factory=list)   # per seed: steps trained (fewer where ``until`` stopped it)
    fast: bool = False                              # the fast path trained it (``fit_pixels``'s ``fast``)

    @property
    def heldout_psnr(self) -> list[float | None] | None:
        return self.eval_psnr.get("heldout")

    def pick(self, part: slice) -> "FitResult":
        """Members ``part`` (a slice of ``seeds``) as a result of their own, equal to a fit of just those seeds
        (every member trains as alone): one job's share of a packed run (``l335q.packing``)."""
        idx = list(range(len(self.seeds)))[part]
        fields, start = [], 0
        for f in self.fields:
            n = len(f.mlp.seeds)
            keep = [i - start for i in idx if start <= i < start + n]
            if keep:
                fields.append(f if len(keep) == n else f.members(keep))
            start += n

        def own(values: list) -> list:
            return [values[i] for i in idx]
        return replace(self, seeds=own(self.seeds), train_psnr=own(self.train_psnr),
                       eval_psnr={k: own(v) for k, v in self.eval_psnr.items()}, loss_curve=own(self.loss_curve),
                       diverged=own(self.diverged), fields=fields, steps_run=own(self.steps_run) if self.steps_run else [])

    def render(self, coords) -> torch.Tensor:
        """Colours at any coordinates (N, 2) in [0, 1)²: (S, N, 3) on the CPU, clamped to [0, 1]."""
        return torch.cat([f.render(coords) for f in self.fields], dim=0).clamp(0.0, 1.0)

    def render_image(self, h: int, w: int) -> np.ndarray:
        """Every seed's field on an h x w grid: (S, h, w, 3) float32 in [0, 1]."""
        from ..data.images import grid

        return self.render(torch.from_numpy(grid(h, w).reshape(-1, 2))).reshape(len(self.seeds), h, w, 3).numpy()


def _shrink_optimizer(opt, cfg: FieldConfig, old: Field, new: Field, keep: list[int]):
    """An optimiser for ``new`` (``old``'s members ``keep``) carrying those members' state over."""
    out = make_optimizer(cfg.optimizer, new.parameters(), cfg.lr, cfg.momentum)
    idx = torch.tensor(keep, device=new.mlp.weights[0].device)
    for po, pn in zip(old.parameters(), new.parameters()):
        state = opt.state.get(po)
        if state:
            out.state[pn] = {k: v[idx].clone() if torch.is_tensor(v) and v.shape == po.shape else v for k, v in state.items()}
    return out


def _look(stage, save, step: int, first: int, steps: int) -> None:
    """Every ``CHECK_EVERY`` steps: tick the checkpoint clock, save when due, stop when asked."""
    if step % CHECK_EVERY == 0 and step > first:
        stage.tick(step, steps, "step")
        if stage.due():
            save(step)
        if stage.stop_requested:
            raise Interrupted(f"stopped at step {step} of {steps}")


def _step(forward, opt, cfg: FieldConfig, x, target, weight=None) -> torch.Tensor:
    """THE training step of a batched field, the plain loop's and the fast path's: ``forward(x)`` against
    ``target``, each seed's mean loss, the gradient of their sum, the optimiser's step. Returns the (S,) losses,
    detached. ``cfg.precision`` "bf16": the forward under bfloat16 autocast (its matmuls in bfloat16: faster on a
    CPU with AVX-512 BF16, bench/cpu_speed.py; the loss, the parameters and the optimiser stay fp32)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16", cache_enabled=False):
        pred = forward(x)
    loss = per_seed_loss(cfg, pred.float(), target, weight)
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    opt.step()
    return loss.detach()


def _fast_steps(model: Field, opt, cfg: FieldConfig, x, target, weight, first: int, sample, look) -> int:
    """The fast path of the full-batch loop: its ``_step``s, ``CHECK_EVERY`` at a time as one unit (``graphs.Steps``:
    a CUDA graph on CUDA, eagerly elsewhere); ``look(step)`` before a unit, ``sample(step, losses)`` of each of its
    steps after it. Returns the step reached (``cfg.steps``)."""
    graphs = x.device.type == "cuda"
    if graphs:
        make_capturable(opt)
    out = torch.zeros(CHECK_EVERY, x.shape[0], device=x.device)   # a unit's losses, read after it

    def body(k: int) -> None:
        for i in range(k):
            out[i].copy_(_step(model.mlp, opt, cfg, x, target, weight))
    runner, step = Steps(body, [model], opt, graphs), first
    while step < cfg.steps:
        look(step)
        k = min(CHECK_EVERY - step % CHECK_EVERY, cfg.steps - step)
        runner.run(k)
        for i in range(k):
            sample(step + i, out[i])
        step += k
    return step


def _fit_chunk(pix: Pixels, cfg, seeds, sigmas, device, evals, log_every, on_step, ckpt, until, first_member=0,
               fast: bool = False):
    torch_dev = torch.device(device)
    full = model = Field(cfg, seeds, sigmas, target_mean=pix.mean()).to(torch_dev)   # model: the members still training
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.momentum)
    S, N = len(seeds), pix.n
    dev_pix = pix.to(torch_dev)
    sampling = bool(cfg.batch_pixels) and cfg.batch_pixels < N
    gens = [torch.Generator().manual_seed(int(s) + 104_729) for s in seeds] if cfg.batch_pixels else []
    counts = pix.counts(S)
    alive, last = list(range(S)), [cfg.steps] * S
    latest = {k: torch.full((S,), math.nan, dtype=torch.float64) for k in evals}
    sampled, losses, first = [], [], 0
    stage = ckpt.stage()

    def save(step: int) -> None:
        stage.save(step, {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                          "gens": [g.get_state() for g in gens], "sampled": sampled,
                          "losses": [t.cpu() for t in losses]})

    def sample(step: int, loss: torch.Tensor, last: bool = False) -> None:   # loss: of the members still training
        if step % log_every == 0 or step == cfg.steps - 1 or last:
            at = (torch.tensor(alive, device=torch_dev),)
            sampled.append(step)
            losses.append(torch.full((S,), math.nan, device=torch_dev).index_put(at, loss))
            if on_step is not None:
                on_step(step, losses[-1][at])

    saved = stage.load()
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for g, state in zip(gens, saved["gens"]):
            g.set_state(state)
        sampled, losses, first = list(saved["sampled"]), [t.to(torch_dev) for t in saved["losses"]], saved["step"]
    train_pix, train_evals = dev_pix, evals
    with torch.no_grad():                         # inputs encoded once: every step's, and the looks' of ``until``
        if not sampling:
            x, target = model.features(dev_pix.coords), dev_pix.target(S)
        look_x = {k: model.features(e.coords.to(torch_dev)) for k, e in evals.items()} if until else {}
    start = first
    if fast:
        start = _fast_steps(model, opt, cfg, x, target, train_pix.weight, first, sample,
                            lambda step: _look(stage, save, step, first, cfg.steps))
    for step in range(start, cfg.steps):
        _look(stage, save, step, first, cfg.steps)
        if sampling:
            idx = torch.stack([torch.randint(counts[i], (cfg.batch_pixels,), generator=gens[i]) for i in alive])
            idx = idx.to(torch_dev)
            at = idx if train_pix.shared else (torch.arange(len(alive), device=torch_dev)[:, None], idx)
            with torch.no_grad():                 # encoded in fp32 whatever the precision
                x = model.features(train_pix.coords[at])
            loss = _step(model.mlp, opt, cfg, x, train_pix.rgb[at])
        else:
            loss = _step(model.mlp, opt, cfg, x, target, train_pix.weight)
        stop = set()
        if until is not None and (step + 1) % until[0] == 0 and step + 1 < cfg.steps:
            for k, e in train_evals.items():
                latest[k][alive] = model.score(e, look_x[k])
            stop = set(until[1](step + 1, latest, first_member)) & set(alive)
        sample(step, loss, last=len(stop) == len(alive))
        if stop:                                   # these members stop here; the others train on without them
            for i in stop:
                last[i] = step + 1
            if len(stop) == len(alive):
                break
            keep = [j for j, i in enumerate(alive) if i not in stop]
            if model is not full:
                full.put(model, [j for j, i in enumerate(alive) if i in stop], [i for i in alive if i in stop])
            smaller = model.members(keep)
            opt = _shrink_optimizer(opt, cfg, model, smaller, keep)
            model, alive = smaller, [alive[j] for j in keep]
            train_pix, train_evals = dev_pix.pick(alive), {k: e.pick(alive) for k, e in evals.items()}
            look_x = {k: v[keep] for k, v in look_x.items()}
            if not sampling:
                x, target = x[keep], target[keep]
    if model is not full:
        full.put(model, list(range(len(alive))), alive)
    if first < cfg.steps and stage.due():
        save(cfg.steps)
    curve = torch.stack(losses).T.double().cpu() if losses else torch.empty(S, 0)
    out = full.render(pix.coords).clamp(0.0, 1.0)
    train = seed_psnr(out, pix.target(S), pix.weight)
    scores = {name: full.score(e) for name, e in evals.items()}
    bad = ~torch.isfinite(out).flatten(1).all(1)
    if curve.numel():
        ran = torch.tensor(sampled)[None, :] < torch.tensor(last)[:, None]     # samples taken while training
        bad |= (~torch.isfinite(curve) & ran).any(1)
    return full, sampled, curve, train, scores, bad, last


def fit_pixels(coords, rgb, cfg: FieldConfig, seeds: list[int], device: str = "cpu",
               evals: dict | None = None, log_every: int | None = None, on_step=None,
               chunk: int | None = None, ckpt=NO_CHECKPOINTS, sigmas: list[float] | None = None,
               until=None, fast: bool = False) -> FitResult:
    """Fit S = len(seeds) fields to pixels (coords (N, 2) in [0, 1)², rgb (N, 3) in [0, 1]).

    coords, rgb: arrays (one pixel set for every seed) or lists of S arrays (one set per member, see ``Pixels``);
    likewise each of evals: name -> (coords, rgb), scored after training (e.g. {"heldout": ...}).
    sigmas: one σ per member (default: cfg.sigma for every member); seeds may repeat.
    log_every: loss sampling interval in steps (default steps // 50). on_step(step, per-seed losses of the
    chunk still training) is called at sampled steps (once per chunk of seeds).
    until: (k, fn): every k steps fn(step, {eval name: (S,) PSNR of the chunk's members}, index of the chunk's
    first member among all) names the members (positions in the chunk) that stop there: they leave the batched model (their parameters and scores are
    those of that step, ``steps_run`` says when; values of members stopped earlier stay as they were), the
    others train on as a smaller batch; naming every member still training ends the chunk. Not with ``ckpt``.
    The fitted fields stay on ``device`` for ``render``.
    chunk: seeds per batched model (default ``seed_chunk``'s: all, one at a time for big fits on a CPU; never
    more than fit the device's memory).
    fast: full-batch fits without ``until`` run their steps ``CHECK_EVERY`` at a time as CUDA graphs on CUDA (eagerly
    elsewhere: the same numbers; other fits ignore it, ``FitResult.fast`` says); TF32 is the caller's choice, a
    bfloat16 forward ``cfg.precision``'s. Jobs: ``L335Q_FAST``.
    ckpt: a job's ``Checkpoints`` (each chunk is a stage: resumed from, saved every ``L335Q_CHECKPOINT_S`` and
    on a stop request, checked every ``CHECK_EVERY`` steps; the chunk is the job's plan, ``Checkpoints.plan``: a
    resumed fit keeps its first run's chunk, which follows the device, so that its stages are the saved ones).
    A chunk that runs out of memory (``out_of_memory``) starts the fit again with half as many seeds at once, down
    to one (noted in the job's summary, ``Watch.note``): the same numbers, as batched seeds train as alone.
    """
    cfg.check()
    if fast not in (False, True):
        raise ValueError(f"fast must be False or True, got {fast!r}")
    if not seeds:
        raise UserError("no seeds to fit")
    if until is not None and ckpt is not NO_CHECKPOINTS:
        raise ValueError("a fit whose members stop early (until) is not checkpointed")
    pix = Pixels.of(coords, rgb)
    evals = {k: Pixels.of(c, t) for k, (c, t) in (evals or {}).items()}
    log_every = max(1, log_every or cfg.steps // 50)
    in_dim = 2 if cfg.encoding == "none" else 2 * frequency_matrix(cfg.encoding, [0], cfg.features, cfg.sigma).shape[-1]
    pixels = min(cfg.batch_pixels or pix.n, pix.n)
    mark = ckpt.mark()
    chunk = ckpt.plan("chunk", seed_chunk(cfg, len(seeds), pixels, device, in_dim, chunk))   # resumed: the saved run's
    fast = fast if pixels == pix.n and until is None else False      # the fast path takes full-batch fits only
    t0 = time.perf_counter()
    while True:                  # out of memory: the whole fit again with half the seeds at once, down to one
        fields, train, scores, curves, bad, steps, run = [], [], {k: [] for k in evals}, [], [], [], []
        try:
            for i in range(0, len(seeds), chunk):
                j = min(i + chunk, len(seeds))
                model, sampled, curve, tr, sc, bd, last = _fit_chunk(
                    pix.members(i, j), cfg, seeds[i:j], None if sigmas is None else sigmas[i:j], device,
                    {k: e.members(i, j) for k, e in evals.items()}, log_every, on_step, ckpt, until, i, fast)
                fields.append(model)
                train.append(tr)
                curves.append(curve)
                bad.append(bd)
                run += last
                steps = sampled if len(sampled) > len(steps) else steps
                for k in evals:
                    scores[k].append(sc[k])
            break
        except (RuntimeError, MemoryError) as exc:
            if chunk == 1 or not out_of_memory(exc):
                raise
            fields = model = exc = None
            release(device)
            ckpt.note("out_of_memory", f"{chunk} seeds at once ran out of memory on {device}: split to {chunk // 2}")
            ckpt.rewind(mark)                          # its stages (saved ones too) are the bigger chunk's
            chunk = ckpt.plan("chunk", chunk // 2, replace=True)
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    bad = torch.cat(bad).tolist()

    def per_seed(t: torch.Tensor) -> list[float | None]:
        return [None if b or not math.isfinite(v) else float(v) for v, b in zip(t.tolist(), bad)]

    longest = max(c.shape[1] for c in curves)          # a chunk ``until`` stopped early has a shorter curve
    curve = torch.cat([F.pad(c, (0, longest - c.shape[1]), value=math.nan) for c in curves])
    return FitResult(seeds=list(seeds), config=cfg, train_psnr=per_seed(torch.cat(train)),
                     eval_psnr={k: per_seed(torch.cat(v)) for k, v in scores.items()}, loss_steps=list(steps),
                     loss_curve=[[v if math.isfinite(v) else None for v in row] for row in curve.tolist()],
                     diverged=bad, seconds=time.perf_counter() - t0, chunk=chunk, fields=fields, steps_run=run,
                     fast=fast)


def fit_image(img: np.ndarray, cfg: FieldConfig, seeds: list[int], device: str = "cpu", split: str = "all",
              log_every: int | None = None, on_step=None, chunk: int | None = None,
              ckpt=NO_CHECKPOINTS, fast: bool = False) -> FitResult:
    """Fit an H x W x 3 image; with ``split="every-other"`` train on [::2, ::2] and score ``heldout`` on the rest."""
    from ..data.images import split_pixels

    (coords, rgb), heldout = split_pixels(img, split)
    evals = {"heldout": heldout} if heldout is not None else {}
    return fit_pixels(coords, rgb, cfg, seeds, device, evals=evals, log_every=log_every, on_step=on_step,
                      chunk=chunk, ckpt=ckpt, fast=fast)
