"""What the automatic σ costs against a full fit of the same image, measured side by side.

  OMP_NUM_THREADS=1 python bench/autosigma_cost.py --resolution 64 --device cpu
Per image (every-other split; the CPU example's field: 3×96 MLP, m = 96, 300 steps): the seconds of one
full fit (one seed on all training pixels, ``fit_image``) and of the automatic choice (``auto_sigma`` as
jobs run it), interleaved ``--repeats`` times after a warm-up; medians, and their ratio. Wall-clock seconds
and, on the CPU, this process's CPU seconds (steadier on a shared machine). The issue's target: ratio ≤ 2.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from l335q.data.images import load_image, resize
from l335q.fields.autosigma import auto_sigma
from l335q.fields.engine import FieldConfig, fit_image


def timed(fn, device: str) -> tuple[object, float, float]:
    """fn's result, its wall-clock seconds and its CPU seconds (this process)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--images", default="sky,grass,astronaut,coffee")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--features", type=int, default=96)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    cfg = FieldConfig(depth=a.depth, width=a.width, encoding="gaussian", features=a.features, sigma=2.0, steps=a.steps)
    imgs = {name: resize(load_image(f"sample:{name}"), a.resolution) for name in a.images.split(",")}
    first = next(iter(imgs.values()))
    timed(lambda: fit_image(first, cfg, [0], a.device, split="every-other"), a.device)            # warm-up
    timed(lambda: auto_sigma(first, cfg, "every-other", device=a.device), a.device)
    print(f"{a.resolution} px, every-other split, {a.depth}x{a.width}, m={a.features}, {a.steps} steps, device {a.device}, "
          f"torch threads {torch.get_num_threads()}, median of {a.repeats}")
    cpu = not a.device.startswith("cuda")
    print(f"{'image':10s} {'full fit s':>10s} {'auto σ s':>9s} {'ratio':>6s}" +
          (f" {'full cpu s':>10s} {'auto cpu s':>10s} {'cpu ratio':>9s}" if cpu else "") + "  σ  trials x steps")
    ratios, cpu_ratios = [], []
    for name, img in imgs.items():
        full, auto = [], []
        for _ in range(a.repeats):
            full.append(timed(lambda: fit_image(img, cfg, [0], a.device, split="every-other"), a.device))
            auto.append(timed(lambda: auto_sigma(img, cfg, "every-other", device=a.device), a.device))
        fw, fc = statistics.median(t[1] for t in full), statistics.median(t[2] for t in full)
        aw, ac = statistics.median(t[1] for t in auto), statistics.median(t[2] for t in auto)
        choice = auto[0][0]
        ratios.append(aw / fw)
        cpu_ratios.append(ac / fc)
        print(f"{name:10s} {fw:10.2f} {aw:9.2f} {aw / fw:6.2f}" + (f" {fc:10.2f} {ac:10.2f} {ac / fc:9.2f}" if cpu else "")
              + f"  {choice.sigma:g}  {len(choice.trials)} x {choice.steps}")
    print(f"auto σ / full fit: wall-clock ratio worst {max(ratios):.2f}, mean {statistics.mean(ratios):.2f}" +
          (f"; CPU-time ratio worst {max(cpu_ratios):.2f}, mean {statistics.mean(cpu_ratios):.2f}" if cpu else "") +
          " (target: at most 2)")


if __name__ == "__main__":
    main()
