"""THE classification training loop; every classification task kind calls ``train``.

Data stay on the device as whole tensors (no DataLoader): each epoch draws a permutation of the training
set from a ``torch.Generator`` seeded with the job's seed, and steps through it in mini-batches.
After each epoch, with the model in eval mode, accuracy and loss are measured over the whole training set
and the whole test set. A non-finite training loss stops training: ``History.diverged_at`` says at which
epoch. On the CPU the same seed gives the same numbers (the caller seeds the model's initial weights,
see ``models.build_model(..., seed=)``; this loop seeds the shuffling and dropout).
On the CPU a model with 2-D convolutions trains and evaluates in channels-last memory format (oneDNN's
preferred layout: bench/cpu_speed.py measures it) and is handed back in the default format; evaluation runs
in inference mode, in batches of ``EVAL_BATCH`` (``CPU_EVAL_BATCH`` on the CPU, where smaller batches stay in cache).
``TrainConfig.fast`` (jobs: ``L335Q_FAST``) hands the training to ``fused.train_fused`` instead (``uses_fused``).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import NO_CHECKPOINTS, Interrupted, rng_state, set_rng_state
from ..optim import make_optimizer

EVAL_BATCH = 2000
CPU_EVAL_BATCH = 256

log = logging.getLogger("l335q.train")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    device: str = "cpu"
    fast: str = "off"       # "auto": ``fused.train_fused`` on CUDA (graphs); "on": also elsewhere (eager); "off"


@dataclass
class Epoch:
    epoch: int              # 1-based
    train_acc: float        # eval mode, whole training set
    test_acc: float
    train_loss: float       # eval mode, whole training set (mean cross-entropy)
    test_loss: float
    seconds: float          # training steps + both evaluation passes


@dataclass
class History:
    epochs: list[Epoch] = field(default_factory=list)
    diverged_at: int | None = None   # the epoch whose training loss was not finite

    @property
    def diverged(self) -> bool:
        return self.diverged_at is not None

    @property
    def final(self) -> Epoch | None:
        return self.epochs[-1] if self.epochs else None


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int | None = None) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode over all of ``x``, ``batch`` images at a time
    (default: ``CPU_EVAL_BATCH`` on the CPU, ``EVAL_BATCH`` elsewhere)."""
    batch = batch or (CPU_EVAL_BATCH if x.device.type == "cpu" else EVAL_BATCH)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=x.device)
    loss = torch.zeros((), device=x.device, dtype=torch.float64)
    for i in range(0, len(x), batch):
        logits = model(x[i:i + batch])
        loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").double()
        correct += (logits.argmax(1) == y[i:i + batch]).sum()
    model.train(was_training)
    return correct.item() / len(x), loss.item() / len(x)


def train(model: nn.Module, data, cfg: TrainConfig, on_epoch: Callable[[Epoch], None] | None = None,
          log_fn: Callable[[str], None] | None = None, ckpt=NO_CHECKPOINTS) -> History:
    """Train ``model`` on ``data`` (x_train, y_train, x_test, y_test on the device) as ``cfg`` says.

    ``ckpt`` (a job's ``Checkpoints``): resume from this training's last checkpoint (its finished epochs are
    replayed through ``on_epoch``), save one every ``L335Q_CHECKPOINT_S`` at epoch ends, and on a stop request
    save mid-epoch and raise ``Interrupted``. Resumed or not, the same seed gives the same numbers on a CPU.
    When ``uses_fused``, ``fused.train_fused`` trains the model instead, with the same checkpoints (its steps as
    CUDA graphs on CUDA; otherwise the same numbers within float rounding, ``tests/test_fast.py``)."""
    say = log_fn or log.info
    device = torch.device(cfg.device)
    stage = ckpt.stage()
    saved = stage.load()
    if uses_fused(cfg, device, saved):
        from .fused import train_fused

        return train_fused([model], data, cfg, [cfg.seed], on_epoch=on_epoch and (lambda _, e: on_epoch(e)),
                           log_fn=say, stage=stage, saved=saved)[0]
    model.to(device)
    layout = channels_last_on_cpu(model, device)
    try:
        return _train(model, data, cfg, on_epoch, say, stage, saved, device, layout)
    finally:
        if layout is torch.channels_last:
            model.to(memory_format=torch.contiguous_format)


def uses_fused(cfg: TrainConfig, device: torch.device, saved: dict | None = None) -> bool:
    """THE choice between the two training loops: a checkpoint ``saved`` is resumed by the loop that wrote it;
    otherwise ``cfg.fast`` by ``config.fast_applies`` ("on" everywhere, "auto" on CUDA only, "off" never)."""
    from ..config import fast_applies

    if saved is not None:
        return "fused" in saved
    return fast_applies(cfg.fast, device)


def history_state(h: History) -> dict:
    """A ``History`` as checkpoint-safe lists and numbers (``history_from`` reads it back)."""
    return {"epochs": [asdict(e) for e in h.epochs], "diverged_at": h.diverged_at}


def history_from(state: dict) -> History:
    return History([Epoch(**e) for e in state["epochs"]], state["diverged_at"])


def save_at_epoch_end(stage, save: Callable[[], None], epoch: int) -> None:
    """``save()`` when ``stage.due()``; on a stop request save and raise ``Interrupted`` (the request is read once,
    so one that comes between the two checks cannot end the training unsaved)."""
    stopping = stage.stop_requested
    if stopping or stage.due():
        save()
    if stopping:
        raise Interrupted(f"stopped after epoch {epoch}")


def resumed_message(epochs: int, within: int, unit: str) -> str:
    return f"resumed from a checkpoint after {epochs} epochs" + (f" + {within} {unit}" if within else "")


def channels_last_on_cpu(model: nn.Module, device: torch.device) -> torch.memory_format:
    """``torch.channels_last`` (and the model converted to it) for a model with 2-D convolutions on the CPU;
    otherwise ``torch.contiguous_format``, the model untouched. Parameters keep their identity (in place)."""
    if device.type != "cpu" or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.contiguous_format
    model.to(memory_format=torch.channels_last)
    return torch.channels_last


def _train(model, data, cfg, on_epoch, say, stage, saved, device, layout) -> History:
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)                     # dropout masks
    x, y = data.x_train.contiguous(memory_format=layout), data.y_train
    x_test = data.x_test.contiguous(memory_format=layout)
    n = len(x)
    history = History()
    order, offset, loss_sum = None, 0, None         # the epoch in progress (set when resuming mid-epoch)

    def save(offset: int = 0) -> None:              # order: the epoch in progress, even before its first step
        stage.save(len(history.epochs), {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "shuffle": shuffle.get_state(),
            "rng": rng_state(), **history_state(history), "order": None if order is None else order.cpu(),
            "offset": offset, "loss_sum": None if order is None else loss_sum.cpu()})

    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        shuffle.set_state(saved["shuffle"])
        set_rng_state(saved["rng"])
        history = history_from(saved)
        for e in history.epochs:
            if on_epoch:
                on_epoch(e)
        if saved["order"] is not None:
            order, offset, loss_sum = saved["order"].to(device), saved["offset"], saved["loss_sum"].to(device)
        say(resumed_message(len(history.epochs), offset, "images"))
        if history.diverged:
            return history
    t_start = time.perf_counter()
    first = len(history.epochs) + 1
    for epoch in range(first, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        if order is None:
            order = torch.randperm(n, generator=shuffle).to(device)
            loss_sum = torch.zeros((), device=device)
        for i in range(offset, n, cfg.batch_size):
            if stage.stop_requested:
                save(offset=i)
                raise Interrupted(f"stopped in epoch {epoch} after {i} images")
            idx = order[i:i + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()               # checked once per epoch: no device sync per step
        order, offset = None, 0
        if not math.isfinite(loss_sum.item()):
            history.diverged_at = epoch
            say(f"epoch {epoch}/{cfg.epochs}: training loss is not finite — diverged, training stopped")
            break
        train_acc, train_loss = evaluate(model, x, y)
        test_acc, test_loss = evaluate(model, x_test, data.y_test)
        if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
            history.diverged_at = epoch
            say(f"epoch {epoch}/{cfg.epochs}: evaluation loss is not finite — diverged, training stopped")
            break
        stats = Epoch(epoch, train_acc, test_acc, train_loss, test_loss, time.perf_counter() - t0)
        history.epochs.append(stats)
        if on_epoch:
            on_epoch(stats)
        stage.tick(epoch, cfg.epochs, "epoch")
        save_at_epoch_end(stage, save, epoch)
        elapsed = time.perf_counter() - t_start
        eta = elapsed / (epoch - first + 1) * (cfg.epochs - epoch)
        say(f"epoch {epoch}/{cfg.epochs}: train acc {train_acc:.4f}, test acc {test_acc:.4f}, "
            f"loss {train_loss:.4f}/{test_loss:.4f}, {stats.seconds:.1f} s, ETA {eta:.0f} s")
    if history.diverged and stage.due():
        save()
    return history
