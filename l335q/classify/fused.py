"""The seeds of one classification cell trained as ONE fused model (the fast path, for GPUs).

``fuse(models)`` turns S copies of one architecture (``models.build_model(name, seed=s)`` each) into one module:
linear layers become batched products (weights (S, in, out), ``torch.baddbmm``), conv layers one grouped
convolution (groups = S), BatchNorm one BatchNorm over the S·C channels (per-channel statistics are per-seed
statistics), so seed s of the fused model computes what model s computes alone. ``unfuse`` copies the weights
back. ``train_fused`` trains the fused model as ``engine.train`` trains each seed: each seed its own permutation
per epoch from ``torch.Generator().manual_seed(seed)``, the loss the sum of the seeds' mean cross-entropies (so
each seed's gradient is its own), an element-wise optimiser; after each epoch every seed is evaluated in eval
mode on the whole training and test sets (large batches, no autograd). Without dropout the numbers are the
plain loop's, seed by seed, within float tolerance (``tests/test_fast.py``); dropout masks come from one stream
for all seeds, so with dropout they differ from the plain loop's masks (with one seed they are the same). On the
CPU the fused model runs channels-last, as the plain loop runs a CNN, so their sums round alike.
``train_fused`` checkpoints through ``engine.train``'s stage as the plain loop does (``fused`` in its state marks
its format): saved at epoch ends when due, and on a stop request between steps (every ``steps_per_graph``).
On CUDA (``graphs=None``: when the device is CUDA) the steps run as CUDA graphs of up to ``steps_per_graph``
steps each, their batch indices precomputed on the device (``graphs.Steps``).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import NO_CHECKPOINTS, Interrupted, rng_state, set_rng_state
from ..graphs import Steps, make_capturable
from ..optim import make_optimizer
from .engine import (Epoch, History, TrainConfig, channels_last_on_cpu, history_from, history_state,
                     resumed_message, save_at_epoch_end)
from .models import CNN, build_model

FUSED_EVAL_IMAGES = 10_000        # images per evaluation pass (divided among the seeds' activations)


class FusedLinear(nn.Module):
    """S nn.Linear layers: x (S, B, in) -> (S, B, out)."""

    def __init__(self, linears: list[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in linears]).contiguous())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in linears]).unsqueeze(1).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    @torch.no_grad()
    def unfuse(self, linears: list[nn.Linear]) -> None:
        for s, m in enumerate(linears):
            m.weight.copy_(self.weight[s].t())
            m.bias.copy_(self.bias[s, 0])


def _fused_layer(layers: list[nn.Module]) -> nn.Module:
    first, S = layers[0], len(layers)
    if isinstance(first, nn.Linear):
        return FusedLinear(layers)
    if isinstance(first, nn.Conv2d):
        layer = nn.Conv2d(first.in_channels * S, first.out_channels * S, first.kernel_size, first.stride,
                          first.padding, groups=S)
    elif isinstance(first, nn.BatchNorm2d):
        layer = nn.BatchNorm2d(first.num_features * S, eps=first.eps, momentum=first.momentum)
    else:
        return copy.deepcopy(first)               # ReLU, max-pool, flatten, dropout: no state
    _copy_stacked(layer, layers, to_fused=True)
    return layer


@torch.no_grad()
def _copy_stacked(fused: nn.Module, layers: list[nn.Module], to_fused: bool) -> None:
    """Parameters and buffers of ``layers`` concatenated along dim 0 into ``fused`` (or back)."""
    for name, t in fused.state_dict().items():
        parts = [m.state_dict()[name] for m in layers]
        if t.dim() == 0:                          # BatchNorm's num_batches_tracked: the same for every seed
            for dst, src in ([(t, parts[0])] if to_fused else [(p, t) for p in parts]):
                dst.copy_(src)
        elif to_fused:
            t.copy_(torch.cat(parts))
        else:
            for p, chunk in zip(parts, t.chunk(len(layers))):
                p.copy_(chunk)


class FusedNet(nn.Module):
    """S classifiers of one architecture (the FCN or a CNN) as one: images (S, B, C, H, W), or (B, C, H, W)
    shared by every seed, -> logits (S, B, classes)."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.S = len(models)
        self.conv = isinstance(models[0], CNN)
        self.features = nn.Sequential(*[_fused_layer(list(ls)) for ls in zip(*map(_trunk, models))])
        self.head = nn.ModuleList([_fused_layer(list(ls)) for ls in zip(*map(_head, models))])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:                           # shared images: every seed sees the same batch
            x = x.unsqueeze(0).expand(self.S, *x.shape)
        S, B = x.shape[:2]
        if self.conv:                              # seeds side by side as channel groups
            h = self.features(x.transpose(0, 1).reshape(B, S * x.shape[2], *x.shape[3:]))
            h = h.reshape(B, S, -1).transpose(0, 1)
        else:
            h = x.reshape(S, B, -1)
        for layer in self.head:
            h = layer(h)
        return h


def _trunk(model: nn.Module) -> list[nn.Module]:
    return list(model.features.children()) if isinstance(model, CNN) else []


def _head(model: nn.Module) -> list[nn.Module]:
    layers = list(model.classifier.children()) if isinstance(model, CNN) else list(model.children())
    return [m for m in layers if not isinstance(m, nn.Flatten)]


def fuse(models: list[nn.Module]) -> FusedNet:
    return FusedNet(models)


def unfuse(fused: FusedNet, models: list[nn.Module]) -> None:
    """Copy the fused model's weights and BatchNorm statistics back into the S separate ``models``."""
    for f, ls in zip(fused.features, zip(*map(_trunk, models))):
        if isinstance(f, (nn.Conv2d, nn.BatchNorm2d)):
            _copy_stacked(f, list(ls), to_fused=False)
    for f, ls in zip(fused.head, zip(*map(_head, models))):
        if isinstance(f, FusedLinear):
            f.unfuse(list(ls))


def per_seed_loss(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(S,) cross-entropy of each seed: logits (S, B, classes), y (S, B) or (B,)."""
    S, B = logits.shape[:2]
    y = y.expand(S, B)
    ce = F.cross_entropy(logits.reshape(S * B, -1), y.reshape(-1), reduction="none").view(S, B)
    return ce.mean(1) if reduction == "mean" else ce.sum(1)


@torch.no_grad()
def evaluate_fused(model: FusedNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(accuracy (S,), mean cross-entropy (S,)) of every seed in eval mode over all of ``x``, on the CPU."""
    was = model.training
    model.eval()
    batch = max(1, FUSED_EVAL_IMAGES // model.S)
    correct = torch.zeros(model.S, device=x.device)
    loss = torch.zeros(model.S, device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        loss += per_seed_loss(logits, y[i:i + batch], "sum").double()
        correct += (logits.argmax(2) == y[i:i + batch]).sum(1)
    model.train(was)
    return (correct / len(x)).cpu(), (loss / len(x)).cpu()


class _Epochs:
    """The training steps of one fused model: index buffers on the device, one ``Steps`` per batch size."""

    def __init__(self, model: FusedNet, opt, x, y, graphs: bool, steps_per_graph: int):
        self.model, self.opt, self.x, self.y = model, opt, x, y
        self.graphs, self.K = graphs, steps_per_graph
        self.loss_sum = torch.zeros(model.S, device=x.device)
        self.steps: dict[int, tuple[Steps, dict]] = {}

    def _steps(self, batch: int) -> tuple[Steps, dict]:
        if batch not in self.steps:
            bufs: dict[int, torch.Tensor] = {}

            def body(k: int) -> None:
                if k not in bufs:                      # zeros: valid indices for the warm-up
                    bufs[k] = torch.zeros(k, self.model.S, batch, dtype=torch.long, device=self.x.device)
                for i in range(k):
                    idx = bufs[k][i]
                    loss = per_seed_loss(self.model(self.x[idx]), self.y[idx])
                    self.opt.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    self.opt.step()
                    self.loss_sum += loss.detach()
            self.steps[batch] = (Steps(body, [self.model], self.opt, self.graphs, tensors=(self.loss_sum,)), bufs)
        return self.steps[batch]

    def _run(self, idx: torch.Tensor) -> None:
        """idx (k, S, batch): k steps."""
        steps, bufs = self._steps(idx.shape[2])
        k = idx.shape[0]
        if k not in bufs:
            bufs[k] = torch.zeros_like(idx)
        bufs[k].copy_(idx)
        steps.run(k)

    def epoch(self, order: torch.Tensor, batch: int, start: int = 0,
              stop: Callable[[], bool] = lambda: False) -> int | None:
        """Steps ``start``, ``start`` + 1, … of one pass over ``order`` (S, n) in mini-batches, each seed's training
        loss added to ``loss_sum``. Returns None when the pass is done, or the next step when ``stop()`` (asked
        before every ``K`` steps) was true."""
        S, n = order.shape
        full = n // batch
        chunks = order[:, :full * batch].reshape(S, full, batch).transpose(0, 1)
        for j in range(start, full, self.K):
            if stop():
                return j
            self._run(chunks[j:j + self.K])
        if n % batch:
            if stop():
                return full
            self._run(order[:, full * batch:].unsqueeze(0))
        return None


def train_fused(models: list[nn.Module], data, cfg: TrainConfig, seeds: list[int], graphs: bool | None = None,
                steps_per_graph: int = 64, on_epoch: Callable[[int, Epoch], None] | None = None,
                log_fn: Callable[[str], None] | None = None, stop: Callable[[int], bool] | None = None,
                stage=None, saved: dict | None = None) -> list[History]:
    """Train ``models`` (one per seed in ``seeds``, same architecture) together as ``cfg`` says (``cfg.seed`` is
    not used: each seed's own seed is). The trained weights are copied back into ``models``; returns one
    ``History`` per seed. A seed whose loss turns non-finite stops its history there (``diverged_at``); the
    others train on (seeds never mix). ``on_epoch(seed index, Epoch)``; ``stop(epoch)`` True after an epoch ends
    training there (e.g. a time budget). ``stage`` (a checkpoint ``Stage``; default none) with ``saved``, what it
    loaded: resume from ``saved`` (finished epochs replayed through ``on_epoch``), save when ``stage.due()`` at
    epoch ends, and on a stop request save between steps and raise ``Interrupted``."""
    device = torch.device(cfg.device)
    graphs = device.type == "cuda" if graphs is None else graphs
    stage = stage or NO_CHECKPOINTS.stage()
    model = fuse(models).to(device)
    channels_last_on_cpu(model, device)
    opt = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    shuffles = [torch.Generator().manual_seed(int(s)) for s in seeds]
    torch.manual_seed(int(seeds[0]))               # dropout masks (one stream for every seed)
    x, y, n = data.x_train, data.y_train, len(data.x_train)
    runner = _Epochs(model, opt, x, y, graphs, max(1, steps_per_graph))
    histories = [History() for _ in seeds]
    done, order, step = 0, None, 0                 # epochs finished; the epoch in progress: orders, next step

    def save(step: int = 0) -> None:
        stage.save(done, {
            "fused": len(seeds), "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(),
            "shuffles": [g.get_state() for g in shuffles], "histories": [history_state(h) for h in histories],
            "done": done, "order": None if order is None else order.cpu(), "step": step,
            "loss_sum": runner.loss_sum.cpu()})

    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        for g, state in zip(shuffles, saved["shuffles"]):
            g.set_state(state)
        set_rng_state(saved["rng"])
        histories = [history_from(h) for h in saved["histories"]]
        done, step = saved["done"], saved["step"]
        order = None if saved["order"] is None else saved["order"].to(device)
        runner.loss_sum.copy_(saved["loss_sum"])
        finished = [(s, e) for s, h in enumerate(histories) for e in h.epochs]
        for s, e in sorted(finished, key=lambda se: se[1].epoch) if on_epoch else ():   # as they came
            on_epoch(s, e)
        if log_fn:
            log_fn(resumed_message(done, step, "steps"))
    if graphs:
        make_capturable(opt)
    for epoch in range(done + 1, cfg.epochs + 1):
        if all(h.diverged for h in histories):
            break
        t0 = time.perf_counter()
        model.train()
        if order is None:
            order = torch.stack([torch.randperm(n, generator=g) for g in shuffles]).to(device)
            runner.loss_sum.zero_()
        step = runner.epoch(order, cfg.batch_size, step, lambda: stage.stop_requested)
        if step is not None:
            save(step)
            raise Interrupted(f"stopped in epoch {epoch} after {step} steps")
        order, step, done = None, 0, epoch
        _end_epoch(model, data, histories, epoch, runner.loss_sum.cpu(), t0, on_epoch)
        stage.tick(epoch, cfg.epochs, "epoch")
        if log_fn:
            log_fn(f"epoch {epoch}/{cfg.epochs}: test acc "
                   f"{', '.join('diverged' if h.diverged else f'{h.final.test_acc:.4f}' for h in histories)}, "
                   f"{time.perf_counter() - t0:.2f} s")
        save_at_epoch_end(stage, save, epoch)
        if stop is not None and stop(epoch):
            break
    unfuse(model, models)
    return histories


def _end_epoch(model: FusedNet, data, histories: list[History], epoch: int, train_loss_sum: torch.Tensor,
               t0: float, on_epoch) -> None:
    """Evaluate every seed after ``epoch``: an ``Epoch`` in its history, or ``diverged_at`` at a non-finite loss."""
    train_acc, train_loss = evaluate_fused(model, data.x_train, data.y_train)
    test_acc, test_loss = evaluate_fused(model, data.x_test, data.y_test)
    seconds = time.perf_counter() - t0
    for s, h in enumerate(histories):
        if h.diverged:
            continue
        if not all(map(math.isfinite, (float(train_loss_sum[s]), float(train_loss[s]), float(test_loss[s])))):
            h.diverged_at = epoch
            continue
        e = Epoch(epoch, float(train_acc[s]), float(test_acc[s]), float(train_loss[s]), float(test_loss[s]), seconds)
        h.epochs.append(e)
        if on_epoch:
            on_epoch(s, e)


def train_seeds(name: str, data, cfg: TrainConfig, seeds: list[int], cnn_config=None, **kw) -> list[History]:
    """``train_fused`` on fresh models ``build_model(name, cnn_config, seed=s)``, one per seed."""
    return train_fused([build_model(name, cnn_config, seed=s) for s in seeds], data, cfg, seeds, **kw)
