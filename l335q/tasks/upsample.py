"""Task kind ``upsample`` — the practical's regression task 3: a field is a continuous function, so
rendering it on a denser grid upsamples the image.

Each job (one image and factor K, all seeds as one batched model) does two things:
  1. the measurable version: average K x K blocks of the image (resized to ``resolution``) into a
     low-resolution copy, fit the field to the copy, render it K times denser and score PSNR and SSIM
     against the original — beside bicubic, bilinear and nearest upsampling of the same copy
     (``fields.upsampling``: one pixel-centre convention for all four);
  2. unless ``store_upsampled: false``: fit the image itself and store its K-times denser render
     (``upsampled``, (resolution·K)² pixels), the practical's deliverable.
``sigma: auto`` (the default) chooses σ from the pixels each fit trains on: the low-resolution copy for 1
(the original never reaches it), the image for 2.
Metrics: ``psnr:<method>``, ``ssim:<method>`` (per seed for inr, seedless for the baselines), ``sigma``.
Artifacts: ``original``, ``low``, ``up:<method>`` (first seed for inr), ``upsampled``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import UserError
from ..data.images import load_image, read_input, resize  # noqa: F401  (read_input: the submit-time hook)
from ..fields.jobs import check_auto, field_config, field_keys, fit, resolve_sigma
from ..fields.names import BASELINES, METHODS
from ..fields.summary import precision_note
from ..results import SubmissionData, Table, group_jobs, mean, sd
from ..specs import Key, Schema, SpecError

_keys = field_keys(encoding="gaussian", sigma="auto", resolution=128, steps=1000)
del _keys["split"]
SCHEMA_KEYS = {**_keys, "factor": Key(int, 4, min=2, max=16, help="upsampling factor K"),
               "store_upsampled": Key(bool, True, grid=False, help="also fit the image and store its K-times render")}


def check(params: dict) -> None:
    check_auto(params)
    if params["resolution"] % params["factor"] or params["resolution"] < 4 * params["factor"]:
        raise SpecError(f"spec key 'resolution': {params['resolution']} must be a multiple of factor "
                        f"{params['factor']} and at least 4 x factor")


SCHEMA = Schema(keys=SCHEMA_KEYS, seeds_per_job=None, check=check)


def run(params: dict, ctx) -> None:
    from ..fields.upsampling import downsample, interpolate, render_dense, scores
    from ..plots import image_png

    original = resize(load_image(params["image"], loader=ctx.input_bytes), params["resolution"])
    K, seeds = params["factor"], params["seeds"]
    low = downsample(original, K)
    h, w = low.shape[:2]
    cfg, choice = resolve_sigma(low, field_config(params), params, "all", ctx)
    ctx.log(f"{params['image']} x{K}: fitting {len(seeds)} seeds on the {w}x{h} copy (σ={cfg.sigma:g})")
    result = fit(low, cfg, seeds, ctx)
    dense = render_dense(result, h, w, K)
    for seed, up, diverged in zip(seeds, dense, result.diverged):
        for name, value in scores(up, original).items():
            ctx.metric(f"{name}:inr", float("nan") if diverged else value, seed=seed)
    ctx.metric("sigma", cfg.sigma)
    ctx.artifact("original", image_png(original))
    ctx.artifact("low", image_png(low))
    ctx.artifact("up:inr", image_png(dense[0]), seed=seeds[0])
    for method in BASELINES:
        up = interpolate(low, K, method)
        for name, value in scores(up, original).items():
            ctx.metric(f"{name}:{method}", value)
        ctx.artifact(f"up:{method}", image_png(up))
    summary = {"sigma": cfg.sigma, "seconds": round(result.seconds, 3), "device": ctx.device, "fast": result.fast,
               **({"auto_sigma": choice.as_dict()} if choice else {})}
    if params["store_upsampled"]:
        cfg_full, choice_full = resolve_sigma(original, field_config(params), params, "all", ctx)
        full = fit(original, cfg_full, seeds[:1], ctx)
        H, W = original.shape[:2]
        ctx.artifact("upsampled", image_png(render_dense(full, H, W, K)[0]), seed=seeds[0],
                     meta={"sigma": cfg_full.sigma, "size": [W * K, H * K], "train_psnr": full.train_psnr[0]})
        summary["upsampled"] = {"sigma": cfg_full.sigma, "size": [W * K, H * K], "train_psnr": full.train_psnr[0]}
    if any(result.diverged):
        ctx.state = "diverged"
    ctx.summary = summary


# ----------------------------------------------------------------------------- reading results

def results(data: SubmissionData) -> Table:
    rows, summary = [], []
    for (image, factor, resolution), jobs in sorted(group_jobs(data.done(), ("image", "factor", "resolution")).items(),
                                                    key=lambda t: tuple(map(str, t[0]))):
        sigma = mean([v for j in jobs for v in j.final("sigma").values()])
        cell = {}
        for method in METHODS:
            psnrs = [v for j in jobs for v in j.final(f"psnr:{method}").values()]
            ssims = [v for j in jobs for v in j.final(f"ssim:{method}").values()]
            inr = method == "inr"
            cell[method] = {"image": image, "resolution": resolution, "factor": factor, "method": method,
                            "psnr": mean(psnrs), "ssim": mean(ssims), "seeds": len(psnrs) if inr else None,
                            "psnr_sd": sd(psnrs) if inr else None, "sigma": sigma if inr else None}
            rows.append(cell[method])
        ranked = sorted((m for m in METHODS if cell[m]["psnr"] is not None), key=lambda m: -cell[m]["psnr"])
        inr, bicubic = cell["inr"], cell["bicubic"]
        if inr["psnr"] is not None and bicubic["psnr"] is not None:
            dp, ds = inr["psnr"] - bicubic["psnr"], inr["ssim"] - bicubic["ssim"]
            summary.append(f"{image} x{factor}: the field ranks {ranked.index('inr') + 1} of {len(ranked)} by PSNR "
                           f"({inr['psnr']:.2f} dB, SSIM {inr['ssim']:.3f}); vs bicubic {dp:+.2f} dB, SSIM {ds:+.3f}; "
                           f"best: {ranked[0]}")
    spec = data.spec
    notes = [f"original resized to {spec.get('resolution')}², K x K block means as the low-resolution copy, each method "
             f"upsamples it K times and is scored against the original; inr: {spec.get('steps')} steps, depth "
             f"{spec.get('depth')}, width {spec.get('width')}, {spec.get('encoding')} m = {spec.get('features')}, "
             f"σ {spec.get('sigma')} (sigma column: the σ used); psnr_sd over seeds; baselines are deterministic"]
    notes += precision_note(spec)
    columns = ["image", "factor", "method", "psnr", "ssim", "seeds", "psnr_sd", "sigma"]
    one_resolution = len({r["resolution"] for r in rows}) <= 1      # then the note names it
    if not one_resolution:
        columns.insert(1, "resolution")
    return Table("upsample", columns, rows, data.id, summary, notes, detail=["resolution"] if one_resolution else [])


def zoom_box(img: np.ndarray, frac: float = 0.25) -> tuple[int, int, int]:
    """(top, left, side) of the square crop (side = frac of the image) with the most detail (gradient energy)."""
    g = np.abs(np.diff(img.mean(-1), axis=0))[:, :-1] + np.abs(np.diff(img.mean(-1), axis=1))[:-1, :]
    side = max(4, int(min(img.shape[:2]) * frac))
    best, where = -1.0, (0, 0)
    step = max(1, side // 4)
    for top in range(0, g.shape[0] - side + 1, step):
        for left in range(0, g.shape[1] - side + 1, step):
            e = float(g[top:top + side, left:left + side].sum())
            if e > best:
                best, where = e, (top, left)
    return where[0], where[1], side


def plot(data: SubmissionData, out: Path, **options) -> None:
    """Per job: original and the four upsamplings side by side, and below them the same zoomed crop."""
    import matplotlib.patches as patches

    from ..plots import figure, png_array, save

    jobs = data.done()
    if options.get("job_id"):
        jobs = [j for j in jobs if j.id == options["job_id"]]
    if not jobs:
        raise UserError(f"submission {data.id} has no finished upsample jobs to draw")
    cols = ["original", "up:nearest", "up:bilinear", "up:bicubic", "up:inr"]
    fig, axes = figure(2 * len(jobs), len(cols), size=(2.3, 2.3))
    for r, job in enumerate(jobs):
        arts = {a.name: png_array(a.data) for a in data.artifacts(job.id) if a.name in cols}
        if "original" not in arts:
            continue
        top, left, side = zoom_box(arts["original"])
        for c, name in enumerate(cols):
            img = arts.get(name)
            method = name.removeprefix("up:")
            label = name if name == "original" else method
            if img is not None and name != "original":
                p = job.final(f"psnr:{method}")
                s = job.final(f"ssim:{method}")
                seed = min(p) if None not in p else None
                label += f"\n{p[seed]:.2f} dB, SSIM {s[seed]:.3f}" if p.get(seed) is not None else ""
            for row, crop in ((2 * r, None), (2 * r + 1, (top, left, side))):
                ax = axes[row, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if img is None:
                    continue
                ax.imshow(img if crop is None else img[top:top + side, left:left + side], interpolation="nearest")
                if crop is None:
                    ax.set_title(label, fontsize=7)
                    ax.add_patch(patches.Rectangle((left - 0.5, top - 0.5), side, side, fill=False, color="yellow"))
        axes[2 * r, 0].set_ylabel(f"{job.params['image'][:16]} x{job.params['factor']}", fontsize=7)
        axes[2 * r + 1, 0].set_ylabel("zoom", fontsize=7)
    fig.suptitle(data.title or f"upsample, submission {data.id}", fontsize=9)
    save(fig, out)
