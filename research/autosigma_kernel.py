"""Automatic σ with no trial fits: the σ under whose neural tangent kernel the training pixels are most likely.

  python research/autosigma_kernel.py --study research/results/autosigma-study-48-all.jsonl \\
      --jsonl research/results/autosigma-kernel-48.jsonl

Tried against the study's held-out curves and not adopted (numbers in research/autosigma.md). The idea: a
field trained in the kernel regime is kernel regression with the network's NTK, and kernel regression
interpolates best with the kernel under which the data are most likely (Gaussian-process marginal
likelihood), so the likelihood ranks σ without a validation split and so without the split's sparser
sampling, which is what makes the shipped rule's validation curves disagree with held-out scoring.
For each image of a study file (``research/autosigma_study.py``) and each σ of its lattice up to
autosigma's cap: the field at initialisation (the study's configuration, seed 0), its empirical NTK
over the training pixels (output channel 0), and the log marginal likelihood of the training pixels
(each colour channel centred, its scale profiled out, the noise ratio the best of a small grid). The
most likely σ is scored on the study's held-out curve like the validation rules of
``autosigma_study.py --analyse`` (loss against the best σ of the spec grid), beside the shipped rule
and beside both combined (the most likely of the σ the rule's tolerance admits).
Only training pixels reach the kernel. One JSON line per image; the run can be resumed.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace

import numpy as np
import torch

from autosigma_study import by_image, held_curve, pick, spec_best, study_cap, study_image, val_curve
from l335q.data.images import split_pixels
from l335q.fields.autosigma import Search
from l335q.fields.engine import Field, FieldConfig

NOISE = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)      # noise variance / signal variance


def ntk(coords: np.ndarray, cfg: FieldConfig) -> np.ndarray:
    """(N, N) empirical NTK of a freshly initialised field (seed 0, output channel 0) on coords."""
    field = Field(cfg, [0])
    params = list(field.parameters())
    out = field(torch.as_tensor(coords, dtype=torch.float32))[0, :, 0]
    n = len(coords)
    grads = torch.autograd.grad(out, params, grad_outputs=torch.eye(n), is_grads_batched=True)
    jac = torch.cat([g.reshape(n, -1) for g in grads], 1).double()
    return (jac @ jac.T).numpy()


def log_likelihood(K: np.ndarray, y: np.ndarray, noise: float) -> float:
    """GP log marginal likelihood (constants dropped) of the columns of y, each with its scale profiled out."""
    n = len(K)
    L = np.linalg.cholesky(K / np.mean(np.diag(K)) + noise * np.eye(n))
    a = np.linalg.solve(L, y)
    return float(sum(-0.5 * n * np.log((a[:, c] ** 2).sum() / n) for c in range(y.shape[1]))
                 - y.shape[1] * np.log(np.diag(L)).sum())


def most_likely(name: str, resolution: int, sigmas: list[float], cfg: FieldConfig) -> dict:
    img = study_image(name, resolution)
    (coords, rgb), _heldout = split_pixels(img, "every-other")
    y = np.asarray(rgb, np.float64)
    y = y - y.mean(0)                                  # each colour channel centred
    scores = {}
    for s in sigmas:
        K = ntk(coords, replace(cfg, sigma=s))
        lik = []
        for noise in NOISE:
            try:
                lik.append(log_likelihood(K, y, noise))
            except np.linalg.LinAlgError:              # K + noise·I not positive definite at this noise
                pass
        scores[s] = max(lik) if lik else -np.inf
    return {"image": name, "resolution": resolution, "kernel_sigma": max(scores, key=scores.get),
            "loglik": [[s, v] for s, v in scores.items()]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--study", default="research/results/autosigma-study-48-all.jsonl")
    p.add_argument("--jsonl", default="research/results/autosigma-kernel-48.jsonl")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--features", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cfg = FieldConfig(depth=a.depth, width=a.width, encoding="gaussian", features=a.features)
    done = {(r["image"], r["resolution"]): r for r in map(json.loads, open(a.jsonl))} if os.path.exists(a.jsonl) else {}
    print(f"{'image':22s} {'best σ':>7s} {'kernel σ':>9s} {'loss dB':>8s} {'rule σ':>7s} {'loss dB':>8s} "
          f"{'both σ':>7s} {'loss dB':>8s}")
    losses = {"kernel": [], "rule": [], "both": []}
    for key, rs in sorted(by_image(a.study).items()):
        capped = sorted(r["sigma"] for r in rs if r["sigma"] <= study_cap(key[1]))
        if key not in done:
            done[key] = most_likely(*key, capped, cfg)
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(done[key]) + "\n")
        held = held_curve(rs)
        best = spec_best(held)
        curve = val_curve([r for r in rs if r["sigma"] in capped], "cb")      # the shipped rule, seed 0
        rule = capped[pick(curve, f"edge{Search.tol_db}")]
        kern = done[key]["kernel_sigma"]
        loglik = dict(map(tuple, done[key]["loglik"]))
        close = [s for s in capped if curve[s] >= max(curve.values()) - Search.tol_db]
        both = max(close, key=loglik.get)           # the likelihood as a tie-break among σ that validate well
        chosen = {"kernel": kern, "rule": rule, "both": both}
        for k, s in chosen.items():
            losses[k].append(best - held[s])
        print(f"{os.path.basename(key[0]):22s} {[s for s in held if held[s] == best][0]:7.3g} " +
              " ".join(f"{chosen[k]:{w}.3g} {losses[k][-1]:8.2f}" for k, w in (("kernel", 9), ("rule", 7), ("both", 7))))
    for k, v in losses.items():
        print(f"{k}: within 0.3 dB of the spec grid's best on {sum(x <= 0.3 for x in v)} of {len(v)} images; "
              f"worst {max(v):.2f} dB, mean {np.mean(v):.2f} dB")


if __name__ == "__main__":
    main()
