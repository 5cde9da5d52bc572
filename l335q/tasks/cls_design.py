"""Task kind ``cls-design`` — which 3-conv + 2-FC CNN within the FCN's parameter budget classifies best.

``designs`` lists CNN designs, each a mapping of ``CNNConfig`` fields (channels, kernels, pools, same_padding,
hidden, batchnorm, dropout); a field left out is DEFAULT_CNN's, and a design without ``hidden`` gets the width
that brings it closest to the Quickstart FCN's 669,706 parameters (``hidden_for_budget``). ``propose: K`` adds
the K cheapest designs by FLOPs of ``classify.design.search``. DEFAULT_CNN is always trained as the reference
(added first when not listed). A design outside ±1.5 % of the budget is refused at submit time, by name.
The recipe is cls-compare's keys (Adam 1e-3, batch 64, 10 epochs by default, optional subsets).

One job = one seed of one design (``designs`` expands to a grid axis of normalised designs); it trains through
``classify.jobs.run_model`` like every classification job. Metrics as cls-sweep's: ``train_acc``, ``test_acc``,
``train_loss``, ``test_loss``, ``seconds`` per epoch; ``params`` and, when the loss went non-finite, ``diverged_at``.
Results: one row per design, ranked by mean final test accuracy, and words computed from the rows: the best
design, whether it beats the default CNN (the submission's first design, DEFAULT_CNN when it was made) by more
than 2 standard errors, and whether it reaches TARGET at the practical's settings (10 epochs, full data) — a
proxy run says that it cannot tell.
"""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path

from ..classify.design import TOLERANCE, count, search
from ..classify.jobs import TRAIN_KEYS, curves, model_row, run_seeds, subset_note
from ..classify.names import DEFAULT_CNN, FCN_PARAMS, CNNConfig
from ..results import SubmissionData, Table, gap_se, mean_curve, unfinished_note
from ..specs import Key, Schema, SpecError
from .. import UserError

TARGET = 0.925           # the mark: mean test accuracy at the practical's settings
PRACTICAL = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "train_subset": None,
             "test_subset": None}
MAX_PROPOSE = 50
SETTINGS = {f.name: f.type for f in fields(CNNConfig)}
TRIPLES = ("channels", "kernels", "pools")


def check_design(i: int, entry) -> CNNConfig:
    """Spec ``designs`` entry ``i`` as a CNNConfig within budget (hidden solved when absent), else SpecError."""
    where = f"spec key 'designs' entry {i + 1}"
    if not isinstance(entry, dict):
        raise SpecError(f"{where}: expected a mapping of CNN settings ({', '.join(SETTINGS)}), got {entry!r}")
    for k, v in entry.items():
        if k not in SETTINGS:
            raise SpecError(f"{where}: unknown setting {k!r} (known: {', '.join(SETTINGS)})")
        ok = (isinstance(v, list) and len(v) == 3 and all(type(x) is int for x in v) if k in TRIPLES else
              type(v) is int if k == "hidden" else isinstance(v, bool) if k in ("same_padding", "batchnorm") else
              isinstance(v, (int, float)) and not isinstance(v, bool))
        if not ok and not (k == "hidden" and v is None):
            raise SpecError(f"{where}: {k} {v!r} is not " + ("a list of three integers" if k in TRIPLES else
                                                             "an integer" if k == "hidden" else
                                                             "true or false" if k != "dropout" else "a number"))
    try:
        cfg = CNNConfig.from_dict({**DEFAULT_CNN.to_dict(), **entry, "hidden": entry.get("hidden") or 1})
    except UserError as exc:
        raise SpecError(f"{where}: {exc}") from None
    if entry.get("hidden") is None:
        from ..classify.models import hidden_for_budget

        cfg = replace(cfg, hidden=hidden_for_budget(cfg))
    params, _ = count(cfg)
    off = params / FCN_PARAMS - 1
    if abs(off) > TOLERANCE:
        raise SpecError(f"{where} ({cfg.label()}): {params:,} parameters is {100 * off:+.2f} % off the FCN's "
                        f"{FCN_PARAMS:,} (allowed ±{100 * TOLERANCE:g} %)")
    return cfg


def prepare(raw: dict) -> dict:
    """``designs`` (+ ``propose``) -> the list of normalised designs the grid runs, DEFAULT_CNN first."""
    given = raw.get("designs") or []
    given = [given] if isinstance(given, dict) else given
    if not isinstance(given, list):
        raise SpecError("spec key 'designs': expected a list of CNN designs (mappings of CNNConfig settings)")
    k = raw.get("propose", 0)
    if type(k) is not int or not 0 <= k <= MAX_PROPOSE:
        raise SpecError(f"spec key 'propose': expected an integer from 0 to {MAX_PROPOSE}, got {k!r}")
    configs = [DEFAULT_CNN] + [check_design(i, e) for i, e in enumerate(given)]
    configs += [d.config for d in search(FCN_PARAMS)[:k]] if k else []
    return {**raw, "designs": [c.to_dict() for c in dict.fromkeys(configs)]}


SCHEMA = Schema(keys={
    "designs": Key(dict, None, nullable=True, help="CNN designs (CNNConfig settings; no hidden = solved for the "
                                                   "budget); a list is the grid axis; DEFAULT_CNN is always added"),
    "propose": Key(int, 0, min=0, max=MAX_PROPOSE, grid=False, help="add the K cheapest designs by FLOPs"),
    **TRAIN_KEYS,
}, seeds_per_job=1, prepare=prepare)


def run(params: dict, ctx) -> None:
    run_seeds("cnn", params, ctx, cnn_config=CNNConfig.from_dict(params["designs"]))


# ----------------------------------------------------------------------------- reading results

def by_design(data: SubmissionData) -> dict[CNNConfig, list]:
    out: dict[CNNConfig, list] = {}
    for job in data.done():
        out.setdefault(CNNConfig.from_dict(job.params["designs"]), []).append(job)
    return out


def reference(data: SubmissionData) -> CNNConfig:
    """The default CNN when the submission was made (its first design): old results keep their reference."""
    designs = data.spec.get("designs")
    return CNNConfig.from_dict(designs[0]) if designs else DEFAULT_CNN


def design_rows(data: SubmissionData) -> list[dict]:
    """One row per design with finished jobs, best mean test accuracy first (``rank`` 1)."""
    ref = reference(data)
    default_flops = count(ref)[1]
    rows = []
    for cfg, jobs in by_design(data).items():
        row, _ = model_row(data, "cnn", "", jobs)
        params, flops = count(cfg)
        te = curves(data, "", "test_acc", jobs)
        rows.append({"design": cfg.label(), "default": cfg == ref, "params": params,
                     "off_budget": round(params / FCN_PARAMS - 1, 5), "mflops": flops / 1e6,
                     "cost_vs_default": flops / default_flops, "seeds": row["seeds"],
                     "test_acc_mean": row["test_acc_mean"], "test_acc_sd": row["test_acc_sd"],
                     "train_acc_mean": row["train_acc_mean"], "gap": row["gap"], "rank": None,
                     "seconds_per_epoch": row["seconds_per_epoch"], "diverged": row["diverged"],
                     "epochs": row["epochs"], "describe": cfg.describe(), "config": cfg.to_dict(),
                     "test_acc_by_seed": {s: c[-1][1] for s, c in sorted(te.items())}})
    rows.sort(key=lambda r: (r["test_acc_mean"] is None, -(r["test_acc_mean"] or 0.0), r["mflops"]))
    for i, r in enumerate(r for r in rows if r["test_acc_mean"] is not None):
        r["rank"] = i + 1
    return rows


def pct(v: float) -> str:
    return f"{100 * v:.2f} %"


def ahead(row: dict, ref: dict) -> tuple[float, float | None]:
    """(row − ref mean test accuracy, the standard error of that difference; None without 2 seeds each)."""
    diff = row["test_acc_mean"] - ref["test_acc_mean"]
    if min(row["seeds"], ref["seeds"]) < 2:
        return diff, None
    return diff, gap_se(row["test_acc_sd"], row["seeds"], ref["test_acc_sd"], ref["seeds"])


def clearly_ahead(row: dict, ref: dict) -> bool:
    diff, se = ahead(row, ref)
    return se is not None and diff > 2 * se


def summarise(rows: list[dict], spec: dict) -> list[str]:
    ranked = [r for r in rows if r["rank"] is not None]
    if not ranked:
        return []
    best, ref = ranked[0], next((r for r in ranked if r["default"]), None)
    lines = [f"Best design: {best['design']} ({best['params']:,} parameters, {best['mflops']:.1f} MFLOPs per image, "
             f"{best['cost_vs_default']:.1f}x the default CNN's), mean test accuracy {pct(best['test_acc_mean'])} "
             + (f"(sd {pct(best['test_acc_sd'])} over {best['seeds']} seeds)." if best["seeds"] > 1 else
                "(one seed: no spread measured).")]
    if ref is None:
        lines.append("The default CNN has no finished seeds: no design can be compared with it.")
    elif best is ref:
        lines.append(f"The default CNN ({ref['design']}) ranks first: no design beats it.")
    else:
        diff, se = ahead(best, ref)
        head = f"The best design is {100 * diff:+.2f} points ahead of the default CNN ({pct(ref['test_acc_mean'])}"
        if se is None:
            lines.append(head + "): fewer than 2 seeds on a side, so whether that is more than 2 standard errors "
                                "is not measured.")
        else:
            clear = [r["design"] for r in ranked if r is not ref and clearly_ahead(r, ref)]
            lines.append(head + f", 2 standard errors = {100 * 2 * se:.2f} points): "
                                f"{'more' if clearly_ahead(best, ref) else 'not more'} than 2 standard errors. Designs "
                                f"ahead of the default by more than 2 standard errors: {len(clear)} of {len(ranked) - 1}"
                                + (f" ({', '.join(clear)})." if clear else "."))
    differs = {k: spec.get(k) for k, v in PRACTICAL.items() if spec.get(k, v) != v}
    if differs:
        say = lambda d: ", ".join(f"{k} {'all' if v is None else v}" for k, v in d.items())  # noqa: E731
        lines.append(f"This is a proxy run ({say(differs)}; the mark is set at {say(PRACTICAL)}): it ranks the "
                     f"designs but does not say "
                     f"whether any reaches {pct(TARGET)} at the practical's settings.")
    else:
        reach = [r for r in ranked if r["test_acc_mean"] >= TARGET]
        lines.append(f"At the practical's settings (10 epochs, all training and test images) {len(reach)} of "
                     f"{len(ranked)} designs reach the {pct(TARGET)} mark (mean over their seeds)"
                     + (f": {', '.join(r['design'] for r in reach)}." if reach else
                        f"; the best falls short by {100 * (TARGET - best['test_acc_mean']):.2f} points."))
    return lines


def results(data: SubmissionData) -> Table:
    rows = design_rows(data)
    notes = ["accuracies at the final epoch; mean ± sd over seeds; rank by test_acc_mean; gap = train_acc_mean − "
             "test_acc_mean; off_budget = params / 669,706 − 1; mflops = forward FLOPs per image (2 x multiply-adds); "
             "cost_vs_default = mflops / the default CNN's; seconds_per_epoch: training + both evaluation passes"
             ] if rows else []
    notes += subset_note(data.spec)
    notes += unfinished_note(data, "seeds")
    columns = ["design", "default", "params", "off_budget", "mflops", "cost_vs_default", "seeds", "test_acc_mean",
               "test_acc_sd", "train_acc_mean", "gap", "rank", "seconds_per_epoch", "diverged"]
    return Table("cls-design", columns, rows, data.id, summarise(rows, data.spec), notes,
                 detail=["epochs", "describe", "config", "test_acc_by_seed"])


def plot(data: SubmissionData, out: Path, **options) -> None:
    """Mean test accuracy against epoch, one line (± sd band) per design, the default CNN in black; the mark
    TARGET as a dotted line."""
    from matplotlib.ticker import MaxNLocator

    from ..plots import band, figure, save

    fig, axes = figure(1, 1, size=(7.5, 4.5))
    ax = axes[0, 0]
    groups = by_design(data)
    for i, row in enumerate(design_rows(data)):
        cfg = CNNConfig.from_dict(row["config"])
        cs = list(curves(data, "", "test_acc", groups[cfg]).values())
        steps, m, d = mean_curve(cs)
        if steps:
            band(ax, steps, m, d, f"{row['design']} ({len(cs)} seeds)",
                 color="black" if row["default"] else f"C{i % 10}", linestyle="--" if row["default"] else "-")
    ax.axhline(TARGET, color="grey", linestyle=":", linewidth=1, label=f"mark ({pct(TARGET)})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="test accuracy", title="mean test accuracy over seeds (± sd)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(data.title or f"cls-design, submission {data.id}")
    save(fig, out)
