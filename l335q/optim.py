"""Optimisers by name, one meaning in every task kind and both training engines:

  adam, adamw    torch defaults besides the learning rate
  sgd            plain SGD (no momentum)
  sgd-momentum   SGD with momentum (``MOMENTUM`` unless the caller passes another)
  rmsprop        RMSprop with the same momentum
"""
from __future__ import annotations

from . import UserError

OPTIMIZERS = ("adam", "adamw", "sgd", "sgd-momentum", "rmsprop")
MOMENTUM = 0.9


def make_optimizer(name: str, params, lr: float, momentum: float = MOMENTUM):
    import torch

    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    raise UserError(f"unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
