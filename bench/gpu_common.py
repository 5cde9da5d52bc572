"""Shared pieces of ``bench/gpu.py``: the sizes (full and ``--tiny``), ``Bench`` (budget, timing, the JSON file,
errors) and the TF32 switch."""
from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a plain checkout (no install)

from l335q.fields.engine import CHECK_EVERY  # noqa: E402

STEPS_PER_GRAPH = 64
FULL = dict(tancik_px=512, tancik_width=256, tancik_m=256, tancik_steps=2000, inr_px=64, inr_seeds=100,
            inr_steps=1000, inr_width=256, inr_ref_fits=3, cls_train=None, cls_test=None, cls_epochs=10,
            cls_seeds=[0, 1, 2], ref_steps=300, ref_eval=6000, check_train=6000)
TINY = dict(tancik_px=32, tancik_width=32, tancik_m=16, tancik_steps=40, inr_px=16, inr_seeds=2,
            inr_steps=20, inr_width=32, inr_ref_fits=1, cls_train=64, cls_test=32, cls_epochs=1,
            cls_seeds=[0, 1], ref_steps=3, ref_eval=32, check_train=64)


class Bench:
    def __init__(self, args):
        self.a, self.t0 = args, time.perf_counter()
        self.size = TINY if args.tiny else FULL
        self.device = args.device
        self.cuda = self.device.startswith("cuda")
        self.out = {"torch": torch.__version__, "python": sys.version.split()[0],
                    "device": torch.cuda.get_device_name() if self.cuda else "cpu", "tiny": args.tiny,
                    "budget_s": args.budget_s, "sizes": self.size, "skipped": [], "errors": {},
                    "how": {"cls_steps_per_graph": STEPS_PER_GRAPH, "fields_steps_per_graph": CHECK_EVERY,
                            "cudnn_benchmark": self.cuda, "tf32": "fast paths only: set_float32_matmul_precision"
                            "('high') and cudnn.allow_tf32; references: PyTorch's defaults (Quickstart) or fp32"}}
        self.graphs_ok = True        # False once a CUDA graph capture failed: later fast runs go eager

    def error(self, where: str, exc: BaseException) -> None:
        """Record a failure (the last lines of its traceback) and say it; the bench goes on."""
        self.out["errors"][where] = traceback.format_exc(limit=-3).splitlines()[-6:]
        self.say(f"ERROR in {where}: {type(exc).__name__}: {exc}")

    def left(self) -> float:
        return self.a.budget_s - (time.perf_counter() - self.t0)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def save(self) -> None:
        self.out["wall_s"] = round(time.perf_counter() - self.t0, 2)
        Path(self.a.out).write_text(json.dumps(self.out, indent=1))

    def say(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", flush=True)

    def timed(self, fn):
        self.sync()
        t = time.perf_counter()
        r = fn()
        self.sync()
        return r, time.perf_counter() - t


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 for matmuls and convolutions on (the fast paths) or off (true fp32: the references)."""
    old = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if on else "highest")
    torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old[0])
        torch.backends.cudnn.allow_tf32 = old[1]


def r3(x):
    return None if x is None else round(float(x), 3)
