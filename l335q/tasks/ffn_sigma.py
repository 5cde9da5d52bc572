"""Task kind ``ffn-sigma`` — Gaussian Fourier features γ(g) = [cos 2πBg, sin 2πBg], B ~ N(0, σ²), over a
grid of σ for each image (Tancik et al. 2020): which σ suits which image? Every-other split: train on
pixels [::2, ::2], held-out PSNR on the other three quarters.

Automatic σ: unless the spec says ``auto: false``, ``sigma`` gets one more grid value, ``auto``, so each
image has one more job; it chooses σ from that image's training pixels only (``fields.autosigma``) and then
fits the same seeds with it. The table puts the choice beside the grid: ``sigma_auto``,
``heldout_psnr_auto`` and ``loss_vs_best_db`` (grid best minus auto; negative = auto beat every grid σ).
Metrics per seed: ``train_psnr``, ``heldout_psnr``; the auto job also ``sigma_auto`` (no seed).
Artifact: ``recon`` (the first seed's reconstruction of the whole image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.images import load_image, read_input, resize  # noqa: F401  (read_input: the submit-time hook)
from ..fields.jobs import field_config, field_keys, fit, pack_key, resolve_sigma, seed_metrics  # noqa: F401
from ..fields.summary import precision_note, training_text
from ..packing import all_seeds, shares
from ..results import SubmissionData, Table, gap_se, group_jobs, mean, sd, unfinished_note
from ..specs import Key, Schema
from .inr_init import target_image

SPLIT = "every-other"
TARGET_DB = 0.3          # the automatic choice should land within this of the grid's best σ
SIGMAS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]

_keys = field_keys(encoding="gaussian", sigma=SIGMAS, resolution=128, steps=1000)
for _name in ("encoding", "split", "loss"):
    del _keys[_name]
SCHEMA_KEYS = {**_keys, "auto": Key(bool, True, grid=False, help="also choose σ automatically for each image")}


def add_auto(raw: dict) -> dict:
    """Unless ``auto: false``: make ``auto`` one more value of the sigma grid (one more job per image)."""
    if raw.get("auto", True) is True:
        sigma = raw.get("sigma", SIGMAS)
        values = list(sigma) if isinstance(sigma, list) else [sigma]
        if "auto" not in values:
            raw["sigma"] = values + ["auto"]
    return raw


SCHEMA = Schema(keys=SCHEMA_KEYS, seeds_per_job=None, prepare=add_auto)


def run(params: dict, ctx) -> None:
    run_packed([params], [ctx])


def run_packed(jobs: list[dict], ctxs: list) -> None:
    """Jobs whose params differ only in ``seeds`` (one job, or a worker's pack: ``l335q.packing``; σ auto jobs
    run alone) as ONE batched fit; each job's context gets what it would have written alone."""
    params, first = jobs[0], ctxs[0]
    img = resize(load_image(params["image"], loader=first.input_bytes), params["resolution"])
    seeds = all_seeds(jobs)
    cfg, choice = resolve_sigma(img, field_config(params, encoding="gaussian"), params, SPLIT, first)
    first.log(f"{params['image']} σ={cfg.sigma:g}: {len(seeds)} seeds on {img.shape[1]}x{img.shape[0]} pixels")
    result = fit(img, cfg, seeds, first, SPLIT)
    for params, ctx, own in shares(jobs, ctxs, result):
        _write(params["seeds"], own, img, cfg, choice, ctx)


def _write(seeds: list[int], result, img, cfg, choice, ctx) -> None:
    from ..plots import image_png

    seed_metrics(ctx, "train_psnr", seeds, result.train_psnr)
    seed_metrics(ctx, "heldout_psnr", seeds, result.heldout_psnr)
    if choice:
        ctx.metric("sigma_auto", choice.sigma)
    h, w = img.shape[:2]
    ctx.artifact("recon", image_png(result.render_image(h, w)[0]), seed=seeds[0],
                 meta={"sigma": cfg.sigma, "heldout_psnr": result.heldout_psnr[0]})
    if any(result.diverged):
        ctx.state = "diverged"
    ctx.summary = {"seconds": round(result.seconds, 3), "sigma": cfg.sigma, "device": ctx.device, "fast": result.fast,
                   **({"auto_sigma": choice.as_dict()} if choice else {})}


# ----------------------------------------------------------------------------- reading results

def cells(data: SubmissionData) -> dict[str, dict]:
    """image -> {"grid": {σ: stats}, "auto": stats or None}; stats: seeds, means, sd, job."""
    out: dict[str, dict] = {}
    for (image, sigma), jobs in group_jobs(data.done(), ("image", "sigma")).items():
        held = [v for j in jobs for v in j.final("heldout_psnr").values()]
        train = [v for j in jobs for v in j.final("train_psnr").values()]
        stats = {"seeds": len(held), "train_psnr_mean": mean(train), "heldout_psnr_mean": mean(held),
                 "heldout_psnr_sd": sd(held), "job": jobs[0],
                 "sigma": (jobs[0].result or {}).get("sigma", sigma)}
        cell = out.setdefault(image, {"grid": {}, "auto": None})
        if sigma == "auto":
            cell["auto"] = stats
        else:
            cell["grid"][float(sigma)] = stats
    return out


def gap_noise(best: dict, auto: dict) -> str:
    """How the gap between two cells compares with seed noise: its standard error from the two cells' sds."""
    if not best["heldout_psnr_sd"] or not auto["heldout_psnr_sd"]:
        return ""
    se = gap_se(best["heldout_psnr_sd"], best["seeds"], auto["heldout_psnr_sd"], auto["seeds"])
    gap = best["heldout_psnr_mean"] - auto["heldout_psnr_mean"]
    return (f"; the gap's standard error over seeds is {se:.2f} dB, so the gap is "
            + ("within" if gap <= 2 * se else "beyond") + " two standard errors of seed noise")


def results(data: SubmissionData) -> Table:
    rows, summary, losses = [], [], {}
    for image, cell in sorted(cells(data).items()):
        grid, auto = cell["grid"], cell["auto"]
        scored = {s: c["heldout_psnr_mean"] for s, c in grid.items() if c["heldout_psnr_mean"] is not None}
        best = max(scored, key=scored.get) if scored else None
        auto_cols = {"sigma_auto": None, "heldout_psnr_auto": None, "loss_vs_best_db": None}
        if auto is not None:
            auto_cols = {"sigma_auto": auto["sigma"], "heldout_psnr_auto": auto["heldout_psnr_mean"],
                         "loss_vs_best_db": (scored[best] - auto["heldout_psnr_mean"])
                         if best is not None and auto["heldout_psnr_mean"] is not None else None}
        for sigma in sorted(grid):
            c = grid[sigma]
            rows.append({"image": image, "sigma": sigma, "seeds": c["seeds"], "train_psnr_mean": c["train_psnr_mean"],
                         "heldout_psnr_mean": c["heldout_psnr_mean"], "heldout_psnr_sd": c["heldout_psnr_sd"],
                         "best": sigma == best, **auto_cols})
        if best is not None:
            words = (f"{image}: best grid σ {best:g} (held-out {scored[best]:.2f} ± {grid[best]['heldout_psnr_sd']:.2f} dB,"
                     f" train {grid[best]['train_psnr_mean']:.2f} dB)")
            if auto_cols["loss_vs_best_db"] is not None:
                loss = losses[image] = auto_cols["loss_vs_best_db"]
                words += (f"; auto σ {auto['sigma']:.3g} reaches {auto['heldout_psnr_mean']:.2f} dB, "
                          + (f"{loss:.2f} dB below the best" if loss > 0 else f"{-loss:.2f} dB above the best")
                          + (f" (within the {TARGET_DB:g} dB target)" if loss <= TARGET_DB else
                             f" (misses the {TARGET_DB:g} dB target{gap_noise(grid[best], auto)})"))
            summary.append(words)
    bests = {r["image"]: r["sigma"] for r in rows if r["best"]}
    if len(bests) > 1:
        same = len(set(bests.values())) == 1
        summary.append(f"the best σ is {'the same' if same else 'not the same'} for every image: "
                       + ", ".join(f"{im} {s:g}" for im, s in bests.items()))
    if losses:
        worst = max(losses, key=losses.get)
        hit = sum(v <= TARGET_DB for v in losses.values())
        summary.append(f"automatic σ within {TARGET_DB:g} dB of the grid's best on {hit} of {len(losses)} images; "
                       f"worst {losses[worst]:.2f} dB ({worst})")
    spec = data.spec
    notes = [f"held-out PSNR on the 3/4 of pixels not in [::2, ::2]; resolution {spec.get('resolution')}, "
             f"{training_text(spec)}, m = {spec.get('features')}; sd over seeds; auto σ chosen from training pixels only"]
    notes += precision_note(spec) + unfinished_note(data, "cells")
    columns = ["image", "sigma", "seeds", "train_psnr_mean", "heldout_psnr_mean", "heldout_psnr_sd", "best",
               "sigma_auto", "heldout_psnr_auto", "loss_vs_best_db"]
    return Table("ffn-sigma", columns, rows, data.id, summary, notes)


def _recon(data: SubmissionData, job) -> np.ndarray | None:
    from ..plots import png_array

    arts = data.artifacts(job.id, "recon")
    return png_array(arts[0].data) if arts else None


def plot(data: SubmissionData, out: Path, **options) -> None:
    """Held-out PSNR against σ per image (log axis, ±sd band, auto σ as a star), and a reconstruction grid:
    one row per image (target, each σ, auto)."""
    from ..plots import band, figure, save

    by_image = cells(data)
    images = sorted(by_image)
    sigmas = sorted({s for c in by_image.values() for s in c["grid"]})
    has_auto = any(c["auto"] for c in by_image.values())
    ncols = 1 + len(sigmas) + has_auto
    fig, axes = figure(1 + len(images), ncols, size=(1.6, 1.7),
                       gridspec_kw={"hspace": 0.7, "height_ratios": [2.4] + [1] * len(images)})
    top_grid = axes[0, 0].get_gridspec()
    for ax in axes[0]:
        ax.remove()
    top = fig.add_subplot(top_grid[0, :])
    for image in images:
        grid, auto = by_image[image]["grid"], by_image[image]["auto"]
        xs = sorted(grid)
        line = band(top, xs, [grid[s]["heldout_psnr_mean"] for s in xs], [grid[s]["heldout_psnr_sd"] for s in xs],
                    label=image)
        top.plot(xs, [grid[s]["heldout_psnr_mean"] for s in xs], "o", markersize=3, color=line.get_color())
        if auto and auto["heldout_psnr_mean"] is not None:
            top.plot([auto["sigma"]], [auto["heldout_psnr_mean"]], "*", markersize=11, color=line.get_color(),
                     markeredgecolor="black", markeredgewidth=0.5)
    top.set_xscale("log")
    top.set(xlabel="σ (log scale)", ylabel="held-out PSNR (dB)",
            title="held-out PSNR vs σ (band: ±sd over seeds; star: automatic σ)")
    top.grid(alpha=0.3, which="both")
    top.legend(fontsize=7)
    for r, image in enumerate(images, start=1):
        cell = by_image[image]
        jobs = [cell["grid"][s]["job"] if s in cell["grid"] else None for s in sigmas]
        titles = [f"σ {s:g}" for s in sigmas]
        if has_auto:
            jobs.append(cell["auto"]["job"] if cell["auto"] else None)
            titles.append(f"auto σ {cell['auto']['sigma']:.3g}" if cell["auto"] else "auto")
        any_job = next((j for j in jobs if j is not None), None)
        axes[r, 0].imshow(target_image(data, any_job) if any_job else np.zeros((2, 2, 3)))
        axes[r, 0].set_title(image[:18], fontsize=7)
        for ax, job, title in zip(axes[r, 1:], jobs, titles):
            img = _recon(data, job) if job else None
            if img is not None:
                ax.imshow(img)
            ax.set_title(title, fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(data.title or f"ffn-sigma, submission {data.id}", fontsize=9)
    save(fig, out)
