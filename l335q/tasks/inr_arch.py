"""Task kind ``inr-arch`` — the practical's regression task 2: deeper or wider networks, reconstruction
losses (MSE, L1, Huber) and optimisers, with quantitative metrics, checked for consistency across inputs
of possibly different resolutions.

A spec is a grid over depth x width x loss x optimizer x image x resolution (any other field key may be
a grid axis too, e.g. lr); each job fits all seeds of one cell as ONE batched model (``fields.engine``).
PSNR is scored with MSE whatever loss trained the field: on every pixel with ``split: all``, on the
held-out pixels with ``split: every-other``. Metrics per seed: ``train_psnr``, ``heldout_psnr`` (every-other),
``psnr`` (the scored one), ``loss`` at sampled steps. Artifact: ``recon`` (the first seed's reconstruction).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.images import load_image, read_input, resize  # noqa: F401  (read_input: the submit-time hook)
from ..fields.jobs import (check_auto, field_config, field_keys, fit, pack_key, resolve_sigma,  # noqa: F401
                           seed_metrics, varying)
from ..fields.summary import consistency, precision_note
from ..packing import all_seeds, shares
from ..results import SubmissionData, Table, group_jobs, mean, sd, unfinished_note
from ..specs import Schema

CONFIG_KEYS = ("depth", "width", "loss", "optimizer")
INPUT_KEYS = ("image", "resolution")
OTHER_KEYS = ("lr", "activation", "output", "encoding", "features", "sigma", "init", "steps")

SCHEMA = Schema(keys=field_keys(depth=[2, 4], width=[64, 256], loss=["mse", "l1", "huber"], output="sigmoid",
                                init="kaiming-normal"),
                seeds_per_job=None, check=check_auto)


def run(params: dict, ctx) -> None:
    run_packed([params], [ctx])


def run_packed(jobs: list[dict], ctxs: list) -> None:
    """Jobs whose params differ only in ``seeds`` (one job, or a worker's pack: ``l335q.packing``; σ auto jobs
    run alone) as ONE batched fit; each job's context gets what it would have written alone."""
    params, first = jobs[0], ctxs[0]
    img = resize(load_image(params["image"], loader=first.input_bytes), params["resolution"])
    seeds, split = all_seeds(jobs), params["split"]
    cfg, choice = resolve_sigma(img, field_config(params), params, split, first)
    first.log(f"depth {cfg.depth} width {cfg.width} {cfg.loss} {cfg.optimizer}: {len(seeds)} seeds on "
              f"{img.shape[1]}x{img.shape[0]} pixels")
    result = fit(img, cfg, seeds, first, split)
    for params, ctx, own in shares(jobs, ctxs, result):
        _write(params, own, img, cfg, choice, ctx)


def _write(params: dict, result, img, cfg, choice, ctx) -> None:
    from ..plots import image_png

    seeds, split = params["seeds"], params["split"]
    scored = result.heldout_psnr if split == "every-other" else result.train_psnr
    seed_metrics(ctx, "train_psnr", seeds, result.train_psnr)
    seed_metrics(ctx, "psnr", seeds, scored)
    if result.heldout_psnr is not None:
        seed_metrics(ctx, "heldout_psnr", seeds, result.heldout_psnr)
    for i, seed in enumerate(seeds):
        for step, loss in zip(result.loss_steps, result.loss_curve[i]):
            ctx.metric("loss", math.nan if loss is None else loss, seed=seed, step=step)
    h, w = img.shape[:2]
    ctx.artifact("recon", image_png(result.render_image(h, w)[0]), seed=seeds[0], meta={"psnr": scored[0]})
    if any(result.diverged):
        ctx.state = "diverged"
    ctx.summary = {"seconds": round(result.seconds, 3), "seeds_at_once": result.chunk, "device": ctx.device,
                   "fast": result.fast,
                   "sigma": cfg.sigma if cfg.encoding == "gaussian" else None,
                   **({"auto_sigma": choice.as_dict()} if choice else {})}


# ----------------------------------------------------------------------------- reading results

def columns_of(data: SubmissionData) -> tuple[list[str], list[str]]:
    """Configuration keys (the four of the practical plus any other that varies) and input keys."""
    extra = varying(data.done(), OTHER_KEYS)
    return [*CONFIG_KEYS, *extra], list(INPUT_KEYS)


def results(data: SubmissionData) -> Table:
    config_keys, input_keys = columns_of(data)
    keys = (*config_keys, *input_keys)
    rows = []
    for key, jobs in group_jobs(data.done(), keys).items():
        values = [v for j in jobs for v in j.final("psnr").values()]
        rows.append({**dict(zip(keys, key)), "seeds": len(values), "psnr_mean": mean(values), "psnr_sd": sd(values),
                     "diverged": sum(v is None for v in values)})
    rows.sort(key=lambda r: tuple(str(r[k]) for k in (*input_keys, *config_keys)))
    split = data.spec.get("split", "all")
    spec = data.spec
    notes = [f"PSNR (MSE-based, whatever the training loss) on {'held-out pixels (every-other split)' if split == 'every-other' else 'every pixel'}; "
             f"{spec.get('steps')} steps, {spec.get('activation')} hidden layers, {spec.get('output')} output, "
             f"encoding {spec.get('encoding')}, init {spec.get('init')}; psnr_sd is over seeds"]
    notes += precision_note(spec)
    notes += unfinished_note(data, "cells")
    summary = consistency(rows, config_keys, input_keys) if rows else []
    columns = [*config_keys, *input_keys, "seeds", "psnr_mean", "psnr_sd", "diverged"]
    return Table("inr-arch", columns, rows, data.id, summary, notes)


def plot(data: SubmissionData, out: Path, **options) -> None:
    """PSNR of every configuration on every input: one line per input over configurations ordered by mean
    rank (parallel lines = a consistent ranking), ±sd over seeds as error bars."""
    from ..plots import figure, save

    table = results(data)
    config_keys, input_keys = columns_of(data)
    conf = lambda r: tuple(r[k] for k in config_keys)
    by_input: dict[tuple, dict[tuple, dict]] = {}
    for r in table.rows:
        by_input.setdefault(tuple(r[k] for k in input_keys), {})[conf(r)] = r
    configs = sorted({conf(r) for r in table.rows},
                     key=lambda c: -(mean([rows[c]["psnr_mean"] for rows in by_input.values() if c in rows]) or 0))
    fig, axes = figure(1, 1, size=(max(6.0, 0.45 * len(configs) + 2), 4.2))
    ax = axes[0, 0]
    x = np.arange(len(configs))
    for inp, rows in sorted(by_input.items(), key=lambda t: tuple(map(str, t[0]))):
        m = [rows[c]["psnr_mean"] if c in rows and rows[c]["psnr_mean"] is not None else np.nan for c in configs]
        e = [rows[c]["psnr_sd"] or 0 if c in rows else 0 for c in configs]
        ax.errorbar(x, m, yerr=e, marker="o", markersize=3, capsize=2, linewidth=1, label=" @ ".join(map(str, inp)))
    ax.set_xticks(x, ["/".join(map(str, c)) for c in configs], rotation=70, fontsize=6)
    ax.set(ylabel="PSNR (dB)", xlabel="/".join(config_keys) + " (ordered by mean PSNR)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncols=2)
    fig.suptitle(data.title or f"inr-arch, submission {data.id}", fontsize=9)
    save(fig, out)
