"""Training steps replayed as CUDA graphs, shared by both training engines' fast paths.

``Steps(body, modules, opt, graphs)`` runs ``body(k)`` — k training steps written by the caller, reading its
inputs from static tensors — either eagerly (``graphs=False``: the same code, on any device; what the CPU tests
run) or as one captured CUDA graph per distinct k (``graphs=True``). Before the first capture the body is warmed
up as 1-step bodies (so its static inputs must hold valid values) on a side stream: cuDNN/cuBLAS choose their
kernels, the optimiser creates its state. Then the modules' parameters and buffers are put back as they were,
the global RNGs (dropout masks) as they were, and the optimiser's state in place as it was (state the warm-up
created is zeroed: for Adam, AdamW, SGD-momentum and RMSprop a zero state is exactly a fresh one), so a warm-up,
at the start or in the middle of a training, changes no number of it. Optimisers must be ``capturable``
(``make_capturable``): their step counters live on the device.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .checkpoints import rng_state, set_rng_state

WARMUP_STEPS = 3


def make_capturable(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Turn on ``capturable`` in every parameter group that knows it; state already there (a resumed optimiser,
    whose step counters ``load_state_dict`` puts on the CPU) moves to its parameter's device."""
    for group in opt.param_groups:
        if "capturable" in group:
            group["capturable"] = True
    for p, st in opt.state.items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.device != p.device:
                st[k] = v.to(p.device)
    return opt


class Steps:
    def __init__(self, body: Callable[[int], None], modules: list[torch.nn.Module], opt, graphs: bool,
                 tensors: tuple[torch.Tensor, ...] = ()):
        """``tensors``: other state the body updates (e.g. a running loss sum), also put back after the warm-up."""
        self.body, self.modules, self.opt, self.graphs, self.tensors = body, modules, opt, graphs, tensors
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._warm = False

    def run(self, k: int) -> None:
        """k steps: eagerly, or by replaying (capturing first) the graph of k steps."""
        if not self.graphs:
            self.body(k)
            return
        if k not in self._graphs:
            self._capture(k)
        self._graphs[k].replay()

    def _capture(self, k: int) -> None:
        if not self._warm:
            self.warm_up()
        graph = torch.cuda.CUDAGraph()
        for group in self.opt.param_groups:      # gradients are allocated inside the graph's memory pool
            for p in group["params"]:
                p.grad = None
        with torch.cuda.graph(graph):
            self.body(k)
        self._graphs[k] = graph

    def warm_up(self) -> None:
        """``WARMUP_STEPS`` 1-step bodies (on a side stream on CUDA), then every state put back as it was."""
        rng = rng_state()
        saved = [{n: t.detach().clone() for n, t in m.state_dict().items()} for m in self.modules]
        kept = [t.detach().clone() for t in self.tensors]
        opt_saved = {p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)} for p, st in self.opt.state.items()}
        cuda = next(self.modules[0].parameters()).is_cuda
        if cuda:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side) if cuda else contextlib.nullcontext():
            for _ in range(WARMUP_STEPS):
                self.body(1)
        if cuda:
            torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for m, state in zip(self.modules, saved):
                for n, t in m.state_dict().items():
                    t.copy_(state[n])
            for t, old in zip(self.tensors, kept):
                t.copy_(old)
            for p, st in self.opt.state.items():     # state from before the warm-up, or zeros (a fresh state)
                for k, v in st.items():
                    if torch.is_tensor(v):
                        v.copy_(opt_saved[p][k]) if k in opt_saved.get(p, {}) else v.zero_()
        if cuda:
            torch.cuda.synchronize()
        set_rng_state(rng)
        self._warm = True
