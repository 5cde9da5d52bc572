"""Classification commands: ``l335q params`` (and ``l335q design``, below).

Registered lazily in cli/main.py (LAZY: "params", "design").
"""
from __future__ import annotations

import json

import click


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def params(fmt):
    """Per-layer parameter arithmetic of the Quickstart FCN and the default CNN, with their totals."""
    from l335q.classify.models import DEFAULT_CNN, FCN_PARAMS, build_model, count_params, format_table, param_table

    models = {"fcn": build_model("fcn"), "cnn": build_model("cnn")}
    if fmt == "json":
        out = {name: {"layers": param_table(m), "total": count_params(m)} for name, m in models.items()}
        out["cnn"]["config"] = DEFAULT_CNN.to_dict()
        out["cnn"]["vs_fcn"] = count_params(models["cnn"]) / count_params(models["fcn"]) - 1
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    titles = {"fcn": "FCN (PyTorch Quickstart): flatten | fc 512 | fc 512 | fc 10",
              "cnn": f"CNN: {DEFAULT_CNN.describe()}"}
    for name, m in models.items():
        click.echo(titles[name])
        for line in format_table(param_table(m)):
            click.echo("  " + line)
        click.echo("")
    diff = count_params(models["cnn"]) - FCN_PARAMS
    click.echo(f"CNN − FCN: {diff:+,} parameters ({100 * diff / FCN_PARAMS:+.2f} %)")


# ----------------------------------------------------------------------------- design (helper H1b adds it here)
@click.command()
@click.option("--budget", type=int, help="Parameter count to aim at (±1.5 %); default: the Quickstart FCN's.")
@click.option("--conv", type=int, default=3, show_default=True, help="Conv layers (CNNConfig networks have 3).")
@click.option("--fc", type=int, default=2, show_default=True, help="FC layers (CNNConfig networks have 2).")
@click.option("--top", type=int, default=10, show_default=True, help="How many designs to list (0 = all).")
@click.option("--probe", is_flag=True, help="Rank by a short training probe instead of by FLOPs.")
@click.option("--probe-designs", type=int, default=6, show_default=True, help="Designs the probe trains.")
@click.option("--max-mflops", type=float, help="Only designs up to this many MFLOPs per image.")
@click.option("--device", default="auto", show_default=True, help="Device for --probe (auto, cpu, cuda).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def design(budget, conv, fc, top, probe, probe_designs, max_mflops, device, fmt):
    """Search 3-conv + 2-FC CNNs within ±1.5 % of BUDGET parameters; print the best one's arithmetic."""
    from l335q.classify.design import designs_for, format_designs
    from l335q.classify.models import FCN_PARAMS
    from l335q.runner import resolve_device

    budget = FCN_PARAMS if budget is None else budget
    device = resolve_device(device) if probe else "cpu"
    answers, arithmetic, total = designs_for(budget, conv, fc, top, probe_designs if probe else 0,
                                             max_mflops * 1e6 if max_mflops else None, device,
                                             log_fn=lambda m: click.echo(m, err=True))
    if fmt == "json":
        click.echo(json.dumps(answers, indent=2))
        return
    click.echo(format_designs(answers, arithmetic, total, budget, "probe" if probe else "flops"))
