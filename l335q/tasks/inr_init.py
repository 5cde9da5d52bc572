"""Task kind ``inr-init`` — the practical's regression task 1: which weight initialiser gives PSNR > 15 dB
for every seed, with the number of steps, the network size and the optimiser held fixed?

The network is the practical's: a plain ReLU MLP on raw (x, y) (no encoding), 4 linear layers of width 256,
Adam 1e-3, and the practical's ReLU output. Each job fits one group of seeds of one initialiser as ONE
batched model (``fields.engine``); ``seed_group`` sets the group size (default 25). The default grid holds
the five standard initialisers and ``mean-colour``, the data-aware one (``fields.models``: output weights 0,
output bias = the image's mean colour, so no ReLU output starts dead); ``research/inr_init.md`` has the
study of why the standard ones fail and how ``mean-colour`` fares.

Why these defaults (measured with ``bench/inr_init_defaults.py``, one H100, fp32, sample:astronaut at
64 x 64, 1000 steps, 100 seeds per initialiser as one batched model, 14.4 s each): with the practical's
ReLU output, the fraction of seeds ending below 15 dB was default 25/100 (median 17.7 dB; failed seeds
are dead outputs at 5.4 dB), kaiming-normal 59/100, kaiming-uniform 75/100, xavier-normal 11/100,
xavier-uniform 19/100. With ``output: sigmoid`` (the student's fix) no seed of any of the five failed
(minimum 16.0 dB, kaiming-uniform). On sample:camera (64 seeds) the ReLU-output default failed 24/64.
The study's table recomputes all of this; nothing here is read by the code.

Metrics per seed: ``psnr`` (final, on every pixel, render clamped to [0, 1]; NaN → stored as null when the
seed diverged), ``loss`` at sampled steps. Artifacts: ``recon:worst`` and ``recon:best`` (PNG of the
worst and best seed of the job, ``meta = {"psnr": ...}``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.images import load_image, read_input, resize  # noqa: F401  (read_input: the submit-time hook)
from ..fields.jobs import PRECISION_KEY, fit, varying
from ..fields.names import INITIALISERS, OUTPUTS
from ..fields.summary import precision_note, training_text
from ..optim import OPTIMIZERS
from ..packing import all_seeds, shares
from ..results import SubmissionData, Table, finite, group_jobs, unfinished_note
from ..specs import Key, Schema

if TYPE_CHECKING:
    from ..fields.engine import FieldConfig

THRESHOLD_DB = 15.0
STUDY_INITIALISERS = ["default", "kaiming-normal", "kaiming-uniform", "xavier-normal", "xavier-uniform", "mean-colour"]

SCHEMA = Schema(keys={
    "image": Key(str, "sample:astronaut", file=True, help="sample:<name>, or an image file stored with the submission"),
    "resolution": Key(int, 64, min=2, max=4096, help="square side the image is resized to"),
    "initialiser": Key(str, STUDY_INITIALISERS, choices=INITIALISERS, help="weight initialiser (a list = grid axis)"),
    "output": Key(str, "relu", choices=OUTPUTS, help="output activation: relu (the practical's) or sigmoid"),
    "steps": Key(int, 1000, min=1, max=1_000_000, grid=False, help="fitting steps (fixed across the grid)"),
    "depth": Key(int, 4, min=1, max=64, grid=False, help="linear layers (fixed across the grid)"),
    "width": Key(int, 256, min=1, max=8192, grid=False, help="hidden width (fixed across the grid)"),
    "optimizer": Key(str, "adam", choices=OPTIMIZERS, grid=False, help="optimiser (fixed across the grid)"),
    "lr": Key(float, 1e-3, min=1e-12, max=1e3, grid=False, help="learning rate (fixed across the grid)"),
    "precision": PRECISION_KEY,
    "device": Key(str, "auto", grid=False, help="auto, cpu, cuda or cuda:N"),
}, seeds_per_job=25)


def config(params: dict) -> FieldConfig:
    from ..fields.engine import FieldConfig

    return FieldConfig(depth=params["depth"], width=params["width"], activation="relu", output=params["output"],
                       encoding="none", init=params["initialiser"], optimizer=params["optimizer"], lr=params["lr"],
                       steps=params["steps"], precision=params.get("precision", "fp32"))


def run(params: dict, ctx) -> None:
    run_packed([params], [ctx])


def run_packed(jobs: list[dict], ctxs: list) -> None:
    """Jobs whose params differ only in ``seeds`` (one job alone, or a worker's pack, see ``l335q.packing``): all
    their seeds as ONE batched fit; each job's context gets the rows and images of its own seeds."""
    params, first = jobs[0], ctxs[0]
    img = resize(load_image(params["image"], loader=first.input_bytes), params["resolution"])
    seeds = all_seeds(jobs)
    first.log(f"{params['initialiser']}: fitting {len(seeds)} seeds on {img.shape[1]}x{img.shape[0]} pixels")
    result = fit(img, config(params), seeds, first)
    for params, ctx, own in shares(jobs, ctxs, result):
        _write(params["seeds"], own, img, ctx)


def _write(seeds: list[int], result, img, ctx) -> None:
    from ..plots import image_png

    for seed, value in zip(seeds, result.train_psnr):
        ctx.metric("psnr", math.nan if value is None else value, seed=seed)
    for i, seed in enumerate(seeds):
        for step, loss in zip(result.loss_steps, result.loss_curve[i]):
            ctx.metric("loss", math.nan if loss is None else loss, seed=seed, step=step)
    scored = [(v, s, i) for i, (s, v) in enumerate(zip(seeds, result.train_psnr)) if v is not None]
    if scored:
        h, w = img.shape[:2]
        images = result.render_image(h, w)
        for name, (value, seed, i) in (("recon:worst", min(scored)), ("recon:best", max(scored))):
            ctx.artifact(name, image_png(images[i]), seed=seed, meta={"psnr": value})
    diverged = [s for s, d in zip(seeds, result.diverged) if d]
    if diverged:
        ctx.state = "diverged"
    ctx.summary = {"seconds": round(result.seconds, 3), "seeds_at_once": result.chunk, "device": ctx.device,
                   "fast": result.fast, "diverged_seeds": diverged}


# ----------------------------------------------------------------------------- reading results

def verdict(psnrs: list[float | None], n: int) -> str:
    fails = n - sum(1 for v in finite(psnrs) if v > THRESHOLD_DB)
    return f"> {THRESHOLD_DB:g} dB for every seed" if fails == 0 else f"fails for {fails} of {n} seeds"


def cells(data: SubmissionData) -> tuple[list[str], dict[tuple, dict[int, float | None]]]:
    """The grid keys that vary besides the initialiser, and cell -> {seed: psnr} (None = diverged)."""
    jobs = data.done()
    extra = varying(jobs, ("image", "resolution", "output"))
    out: dict[tuple, dict[int, float | None]] = {}
    for key, group in group_jobs(jobs, ("initialiser", *extra)).items():
        out[key] = {s: v for j in group for s, v in j.final("psnr").items()}
    return extra, out


def results(data: SubmissionData) -> Table:
    extra, by_cell = cells(data)
    order = {name: i for i, name in enumerate(INITIALISERS)}
    rows = []
    for key in sorted(by_cell, key=lambda k: (tuple(map(str, k[1:])), order.get(k[0], 99))):
        values = list(by_cell[key].values())
        ok = sorted(finite(values))
        n = len(values)
        rows.append({"initialiser": key[0], **dict(zip(extra, key[1:])), "seeds": n,
                     "psnr_min": ok[0] if ok else None, "psnr_median": _median(ok), "psnr_max": ok[-1] if ok else None,
                     "frac_above_15": sum(v > THRESHOLD_DB for v in ok) / n if n else None,
                     "verdict": verdict(values, n)})
    summary = [pass_sentence([r for r in rows if tuple(r[k] for k in extra) == group],
                             f" ({', '.join(f'{k} {v}' for k, v in zip(extra, group))})" if extra else "")
               for group in {tuple(r[k] for k in extra) for r in rows}]
    spec = data.spec
    notes = [f"{training_text(spec)}, raw (x, y) input, ReLU hidden layers, {spec.get('output')} output; PSNR on "
             f"every pixel; a diverged seed counts as a failure"]
    notes += precision_note(spec) + unfinished_note(data, "seeds")
    columns = ["initialiser", *extra, "seeds", "psnr_min", "psnr_median", "psnr_max", "frac_above_15", "verdict"]
    return Table("inr-init", columns, rows, data.id, sorted(summary), notes)


def pass_sentence(rows: list[dict], where: str = "") -> str:
    """Which initialisers of ``rows`` (one group of the table) keep every seed above the threshold, and which fail."""
    def median(r):
        return "no finite PSNR" if r["psnr_median"] is None else f"median {r['psnr_median']:.2f} dB"

    winners = [r for r in rows if r["frac_above_15"] == 1.0]
    losers = sorted((r for r in rows if r["frac_above_15"] != 1.0), key=lambda r: -(r["frac_above_15"] or 0))
    failing = "; ".join(f"{r['initialiser']} {r['verdict']} ({median(r)})" for r in losers)
    if not winners:
        return f"no initialiser stays above {THRESHOLD_DB:g} dB for every seed{where}: {failing}"
    passing = ", ".join(f"{r['initialiser']} ({r['seeds']} of {r['seeds']} seeds, {median(r)})" for r in winners)
    return (f"above {THRESHOLD_DB:g} dB for every seed{where}: {passing}"
            + (f"; not every seed: {failing}" if losers else ""))


def _median(sorted_values: list[float]) -> float | None:
    n = len(sorted_values)
    if not n:
        return None
    return sorted_values[n // 2] if n % 2 else 0.5 * (sorted_values[n // 2 - 1] + sorted_values[n // 2])


def worst_images(data: SubmissionData) -> dict[tuple, tuple[float, int, bytes]]:
    """cell -> (psnr, seed, PNG bytes) of the worst stored reconstruction over the cell's jobs."""
    extra, _ = cells(data)
    out = {}
    for key, group in group_jobs(data.done(), ("initialiser", *extra)).items():
        for job in group:
            for art in data.artifacts(job.id, "recon:worst"):
                psnr = (art.meta or {}).get("psnr")
                if psnr is not None and (key not in out or psnr < out[key][0]):
                    out[key] = (psnr, art.seed, art.data)
    return out


def target_image(data: SubmissionData, job):
    """The image a job fitted, at its resolution (from the samples, or from the bytes stored with the submission)."""
    return resize(load_image(data.ref(job.params["image"]), loader=data.input_bytes), job.params["resolution"])


def plot(data: SubmissionData, out: Path, **options) -> None:
    """PSNR per seed for each initialiser (box and points, 15 dB line), and the target beside each
    initialiser's worst-seed reconstruction."""
    import numpy as np

    from ..plots import figure, png_array, save

    extra, by_cell = cells(data)
    keys = sorted(by_cell, key=lambda k: tuple(map(str, k[1:])) + (INITIALISERS.index(k[0]),))
    worst = worst_images(data)
    n = len(keys) + 1
    fig, axes = figure(2, n, size=(max(2.2, 9.0 / n), 2.6), gridspec_kw={"hspace": 0.55})
    grid = axes[0, 0].get_gridspec()
    for ax in axes[0]:
        ax.remove()
    top = fig.add_subplot(grid[0, :])
    labels = ["\n".join([k[0], *map(str, k[1:])]) for k in keys]
    values = [finite(by_cell[k].values()) for k in keys]
    top.boxplot([v or [np.nan] for v in values], showfliers=False)
    top.set_xticks(range(1, len(labels) + 1), labels)
    rng = np.random.default_rng(0)      # jitter only
    for i, v in enumerate(values, start=1):
        top.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=10, alpha=0.6, zorder=3)
    top.axhline(THRESHOLD_DB, color="tab:red", linestyle="--", linewidth=1, label=f"{THRESHOLD_DB:g} dB")
    top.set(ylabel="PSNR (dB)", title=f"final PSNR per seed ({sum(len(v) for v in values)} fits)")
    top.legend(fontsize=7, loc="lower right")
    top.tick_params(axis="x", labelsize=7)
    top.grid(alpha=0.3, axis="y")
    for ax in axes[1]:
        ax.set_xticks([])
        ax.set_yticks([])
    if data.done():
        job = data.done()[0]
        axes[1, 0].imshow(target_image(data, job))
        axes[1, 0].set_title(f"target {job.params['image']}" + (" (first)" if extra else ""), fontsize=7)
    for ax, key in zip(axes[1, 1:], keys):
        if key in worst:
            psnr, seed, png = worst[key]
            ax.imshow(png_array(png))
            ax.set_title(f"{key[0]}: worst seed {seed}\n{psnr:.1f} dB", fontsize=7)
        else:
            ax.set_title(f"{key[0]}: no image", fontsize=7)
    fig.suptitle(data.title or f"inr-init, submission {data.id}")
    save(fig, out)
