"""Task kind ``cls-sweep`` — the practical's classification task 2: learning rate and batch size.

Retrain a model (``cnn``: cls-compare's DEFAULT_CNN, or ``fcn``) with the keys of cls-compare, where ``lr``,
``batch_size`` and ``model`` may be lists (grid axes, crossed with the seeds). One job = one seed of one
(model, lr, batch_size) cell; it goes through ``classify.jobs.run_model`` and so through the one training
engine, and a CNN job stores its weights and feature maps like every CNN job.

Metrics (seed = the job's seed, step = epoch): ``train_acc``, ``test_acc``, ``train_loss``, ``test_loss``,
``seconds``; without a step: ``params`` and, when the loss went non-finite, ``diverged_at``.
Results: one row per (model, lr, batch_size), and words computed from the rows (``classify.sweep_summary``).
"""
from __future__ import annotations

import math
from pathlib import Path

from ..classify.jobs import TRAIN_KEYS, curves, model_row, run_seeds, subset_note
from ..classify.names import MODELS
from ..classify.sweep_summary import CHANCE, find_sweeps, label, n_seeds, summarise
from ..results import JobData, SubmissionData, Table, group_jobs, mean, mean_curve, unfinished_note
from ..specs import Key, Schema

REACH = 0.85             # epochs_to_85: the first epoch whose mean test accuracy reaches this
PRACTICAL = {"epochs": 10, "train_subset": None, "test_subset": None}   # how the practical's sweeps were run
CELL = ("model", "lr", "batch_size")
PANELS_PER_ROW = 3

SCHEMA = Schema(keys={
    "model": Key(str, "cnn", choices=MODELS, help="cnn (cls-compare's CNN) or fcn (the Quickstart net)"),
    **TRAIN_KEYS,
    "lr": Key(float, 1e-3, min=1e-12, max=1e12, help="learning rate; a list is a grid axis"),
    "batch_size": Key(int, 64, min=1, max=60000, help="mini-batch size; a list is a grid axis"),
}, seeds_per_job=1)


def run(params: dict, ctx) -> None:
    run_seeds(params["model"], params, ctx)


# ----------------------------------------------------------------------------- reading results

def per_seed(jobs: list[JobData]) -> list[dict]:
    """Every seed of a cell, diverged ones included: final accuracies (None when diverged), curves, timing."""
    out = []
    for job in jobs:
        diverged = job.final("diverged_at")
        tr, te, secs = job.curve("train_acc"), job.curve("test_acc"), job.curve("seconds")
        for seed in job.params["seeds"]:
            gone = seed in diverged
            train_curve = [v for _, v in tr.get(seed, [])]
            test_curve = [v for _, v in te.get(seed, [])]
            out.append({"seed": seed, "diverged": gone, "diverged_at": diverged.get(seed),
                        "train_acc": None if gone or not train_curve else train_curve[-1],
                        "test_acc": None if gone or not test_curve else test_curve[-1],
                        "seconds_per_epoch": mean(v for _, v in secs.get(seed, [])),
                        "train_curve": train_curve, "test_curve": test_curve})
    return sorted(out, key=lambda s: s["seed"])


def epochs_to(data: SubmissionData, jobs: list[JobData], level: float = REACH) -> int | None:
    """The first epoch at which the mean test accuracy over the cell's (non-diverged) seeds reaches ``level``."""
    steps, m, _ = mean_curve(list(curves(data, "", "test_acc", jobs).values()))
    return next((s for s, v in zip(steps, m) if v is not None and v >= level), None)


def cell_rows(data: SubmissionData) -> list[dict]:
    rows = []
    for (model, lr, batch), jobs in sorted(group_jobs(data.done(), CELL).items()):
        row, _ = model_row(data, model, "", jobs)
        rows.append({"model": model, "lr": lr, "batch_size": batch, "seeds": row["seeds"],
                     "train_acc_mean": row["train_acc_mean"], "train_acc_sd": row["train_acc_sd"],
                     "test_acc_mean": row["test_acc_mean"], "test_acc_sd": row["test_acc_sd"], "gap": row["gap"],
                     "epochs_to_85": epochs_to(data, jobs), "seconds_per_epoch": row["seconds_per_epoch"],
                     "diverged": row["diverged"], "diagnosis": row["diagnosis"], "epochs": row["epochs"],
                     "params": row["params"], "per_seed": per_seed(jobs)})
    return rows


def results(data: SubmissionData) -> Table:
    rows = cell_rows(data)
    notes = [f"accuracies at the final epoch; mean ± sd over the seeds that did not diverge ('seeds'); "
             f"'diverged' counts the others; gap = train_acc_mean − test_acc_mean; epochs_to_85 = first epoch whose "
             f"mean test accuracy reaches {100 * REACH:g} % (– = never); seconds_per_epoch = training steps + "
             f"the engine's two evaluation passes"] if rows else []
    notes += subset_note(data.spec)
    notes += unfinished_note(data, "seeds")
    columns = ["model", "lr", "batch_size", "seeds", "train_acc_mean", "train_acc_sd", "test_acc_mean", "test_acc_sd",
               "gap", "epochs_to_85", "seconds_per_epoch", "diverged", "diagnosis"]
    summary = summarise(rows)
    differs = {k: data.spec.get(k) for k, v in PRACTICAL.items() if data.spec.get(k, v) != v}
    if summary and differs:
        summary.append("caveat: the practical's sweeps ran 10 epochs on all 60,000 training images; this submission "
                       f"differs ({', '.join(f'{k} {v}' for k, v in differs.items())}), so its absolute accuracies "
                       "(e.g. 'about 89 %') are not like for like.")
    return Table("cls-sweep", columns, rows, data.id, summary, notes, detail=["epochs", "params", "per_seed"])


def plot(data: SubmissionData, out: Path, **options) -> None:
    """Accuracy against epoch, one panel per sweep (a swept axis with the others fixed): one colour per value,
    test solid, train dashed, mean ± sd over seeds."""
    from matplotlib.ticker import MaxNLocator

    from ..plots import band, figure, save

    groups = group_jobs(data.done(), CELL)
    rows = [{"model": m, "lr": lr, "batch_size": b} for m, lr, b in sorted(groups)]
    sweeps = find_sweeps(rows)
    panels = [(sw.name, sw.axis, sw.rows) for sw in sweeps] or [("one setting", None, rows)]
    ncols = min(PANELS_PER_ROW, len(panels))
    fig, axes = figure(math.ceil(len(panels) / ncols), ncols, size=(5.5, 4.0), layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (title, axis, cells) in zip(axes.flat, panels):
        for i, cell in enumerate(cells):
            jobs = groups[tuple(cell[k] for k in CELL)]
            name = label(axis, cell[axis]) if axis else ", ".join(label(k, cell[k]) for k in CELL)
            for split, style in (("test", "-"), ("train", "--")):
                cs = list(curves(data, "", f"{split}_acc", jobs).values())
                steps, m, d = mean_curve(cs)
                if steps:
                    band(ax, steps, m, d, f"{name} {split} ({n_seeds(len(cs))})", color=f"C{i}", linestyle=style)
        ax.axhline(CHANCE, color="grey", linestyle=":", linewidth=1, label=f"chance ({100 * CHANCE:g} %)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="accuracy", title=title, ylim=(0, 1))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(data.title or f"cls-sweep, submission {data.id} (test solid, train dashed; mean ± sd)")
    save(fig, out)
