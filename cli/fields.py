"""``l335q fit IMAGE``: fit one neural field (several seeds batched) in-process and print its PSNR.

The Tancik et al. 2D setup:
  l335q fit sample:astronaut --resolution 512 --encoding gaussian --features 256 --sigma 10 \\
      --depth 4 --width 256 --optimizer adam --lr 1e-3 --steps 2000 --split every-other
"""
from __future__ import annotations

import json

import click

from l335q import UserError
from l335q.data.images import SPLITS
from l335q.fields.encodings import ENCODINGS
from l335q.fields.engine import LOSSES
from l335q.fields.models import ACTIVATIONS, INITIALISERS, OUTPUTS
from l335q.fields.names import PRECISIONS
from l335q.optim import OPTIMIZERS

STRIP_MAX = 8     # seeds shown side by side in --out


def parse_sigma(value: str) -> float | str:
    """``--sigma``: a positive number, or ``auto`` (chosen from the training pixels)."""
    if value == "auto":
        return "auto"
    try:
        sigma = float(value)
    except ValueError:
        raise UserError(f"--sigma: expected a positive number or 'auto', got {value!r}") from None
    if not sigma > 0 or sigma == float("inf"):
        raise UserError(f"--sigma: expected a positive number or 'auto', got {value!r}")
    return sigma


def resolve_sigma(sigma: float | str, img, cfg, split: str, seed: int = 0, device: str = "cpu") -> float:
    """The σ to fit with: ``auto`` is chosen from the training pixels of ``split`` only (fields.autosigma)."""
    if sigma != "auto":
        return float(sigma)
    if cfg.encoding != "gaussian":
        raise UserError("--sigma auto needs --encoding gaussian")
    from l335q.fields.autosigma import auto_sigma

    choice = auto_sigma(img, cfg, split, seed=seed, device=device)
    click.echo(choice.text(), err=True)
    return choice.sigma


def _strip(images):
    import numpy as np

    gap = np.ones((images.shape[1], 2, 3), dtype=np.float32)
    parts = []
    for im in images[:STRIP_MAX]:
        parts += [im, gap]
    return np.concatenate(parts[:-1], axis=1)


@click.command()
@click.argument("image")
@click.option("--resolution", type=click.IntRange(2, 4096), default=256, show_default=True,
              help="Centre-crop to a square and resize to R x R (anti-aliased).")
@click.option("--encoding", type=click.Choice(ENCODINGS), default="none", show_default=True)
@click.option("--sigma", default="10", show_default=True, help="σ of the Gaussian features (a number, or auto).")
@click.option("--features", type=click.IntRange(1), default=256, show_default=True, help="m, number of frequencies.")
@click.option("--depth", type=click.IntRange(1), default=4, show_default=True, help="Number of linear layers.")
@click.option("--width", type=click.IntRange(1), default=256, show_default=True)
@click.option("--activation", type=click.Choice(ACTIVATIONS), default="relu", show_default=True)
@click.option("--output", "output_act", type=click.Choice(OUTPUTS), default="sigmoid", show_default=True)
@click.option("--init", type=click.Choice(INITIALISERS), default="default", show_default=True)
@click.option("--loss", type=click.Choice(LOSSES), default="mse", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adam", show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="sgd-momentum and rmsprop.")
@click.option("--steps", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch-pixels", type=click.IntRange(1), default=None, help="Random pixels per step (default: all).")
@click.option("--seeds", default="0", show_default=True, help='Seeds fitted as one batched model, e.g. "0-3".')
@click.option("--split", type=click.Choice(SPLITS), default="all", show_default=True,
              help="every-other: train on [::2, ::2], score held-out PSNR on the other pixels.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="bf16: the training forward in bfloat16 (faster on CPUs with AVX-512 BF16; not the fp32 numbers).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N].")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the reconstruction (seeds side by side) as PNG.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--upsample", type=click.IntRange(2, 16), default=None,
              help="Render the fit K times denser (pixel-centre aligned) into --out.")
def fit(image, resolution, encoding, sigma, features, depth, width, activation, output_act, init, loss, optimizer,
        lr, momentum, steps, batch_pixels, seeds, split, precision, device, out, fmt, upsample):
    """Fit a neural field to IMAGE (sample:<name> or a PNG/JPEG/TIFF file) and report PSNR per seed."""
    from l335q.data.images import load_image, resize
    from l335q.fields.engine import FieldConfig, fit_image
    from l335q.runner import resolve_device
    from l335q.specs import parse_seeds

    sigma = parse_sigma(sigma)
    seed_list = parse_seeds(seeds)
    img = resize(load_image(image), resolution)
    cfg = FieldConfig(depth=depth, width=width, activation=activation, output=output_act, encoding=encoding,
                      features=features, init=init, loss=loss, optimizer=optimizer, lr=lr, momentum=momentum,
                      steps=steps, batch_pixels=batch_pixels, precision=precision)
    if upsample and not out:
        raise UserError("--upsample needs --out FILE for the upsampled image")
    device = resolve_device(device)
    cfg.sigma = resolve_sigma(sigma, img, cfg, split, seed_list[0], device)
    cfg.check()
    result = fit_image(img, cfg, seed_list, device, split=split)
    if out:
        from pathlib import Path

        from l335q.plots import image_png

        from l335q.fields.upsampling import render_dense

        h, w = img.shape[:2]
        rendered = render_dense(result, h, w, upsample) if upsample else result.render_image(h, w)
        Path(out).write_bytes(image_png(_strip(rendered)))
    config = {"image": image, "resolution": resolution, "split": split, "seeds": seed_list, "device": device,
              **cfg.as_dict(), **({"upsample": upsample} if upsample else {})}
    if fmt == "json":
        click.echo(json.dumps({"train_psnr": result.train_psnr, "heldout_psnr": result.heldout_psnr,
                               "seconds": round(result.seconds, 3), "config": config}))
        return
    fmt_db = lambda v: "diverged" if v is None else f"{v:.2f} dB"
    for i, s in enumerate(seed_list):
        held = f", held-out {fmt_db(result.heldout_psnr[i])}" if result.heldout_psnr is not None else ""
        click.echo(f"seed {s}: train {fmt_db(result.train_psnr[i])}{held}")
    click.echo(f"{len(seed_list)} seed(s) in {result.seconds:.1f} s on {device} "
               f"({result.chunk} at a time){f'; wrote {out}' if out else ''}", err=True)
