"""What the classification task kinds ``cls-compare``, ``cls-sweep`` and ``cls-design`` share: their spec keys,
a job's data, one model trained for one seed with its metrics written, and those metrics read back as curves
and a table row."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..optim import OPTIMIZERS
from ..results import SubmissionData, mean, mean_curve, sd
from ..specs import Key
from .diagnosis import diagnose

if TYPE_CHECKING:
    from .engine import History

CURVES = ("train_acc", "test_acc", "train_loss", "test_loss", "seconds")

# Keys every classification kind shares (cls-sweep adds ``model`` and makes lr / batch_size grid axes).
TRAIN_KEYS = {
    "epochs": Key(int, 10, min=1, max=1000, grid=False, help="training epochs"),
    "batch_size": Key(int, 64, min=1, max=60000, grid=False, help="mini-batch size"),
    "lr": Key(float, 1e-3, min=1e-12, max=1e12, grid=False, help="learning rate"),
    "optimizer": Key(str, "adam", choices=OPTIMIZERS, grid=False, help="optimizer"),
    "train_subset": Key(int, None, min=1, max=60000, nullable=True, grid=False,
                        help="use the first N training images (quick runs); null = all 60,000"),
    "test_subset": Key(int, None, min=1, max=10000, nullable=True, grid=False,
                       help="evaluate on the first N test images (quick runs); null = all 10,000"),
    "device": Key(str, "auto", grid=False, help="auto, cpu, cuda or cuda:N"),
}


def load_data(params: dict, device: str):
    """Fashion-MNIST on ``device``, cut to the job's ``train_subset`` / ``test_subset``."""
    from ..data import fashion_mnist

    data = fashion_mnist.load(device, params.get("train_subset"))
    n = params.get("test_subset")
    if n is not None:
        data.x_test, data.y_test = data.x_test[:n], data.y_test[:n]
    return data


def run_model(name: str, params: dict, seed: int, data, ctx, many_seeds: bool = False, prefix: str = "",
              cnn_config=None) -> History:
    """Train one model for one seed, writing its curves (``<prefix>train_acc`` …) and, for a CNN, its weights
    and feature maps. A CNN is ``cnn_config`` (a ``CNNConfig``; default ``DEFAULT_CNN``). Sets
    ``ctx.state = "diverged"`` when the loss goes non-finite. ``L335Q_FAST`` goes to ``TrainConfig.fast``
    (``engine.uses_fused`` decides the loop)."""
    from ..config import fast_mode
    from .engine import TrainConfig, train
    from .features import store_cnn
    from .models import build_model, count_params

    model = build_model(name, cnn_config, seed=seed)
    cfg = TrainConfig(epochs=params["epochs"], batch_size=params["batch_size"], lr=params["lr"],
                      optimizer=params["optimizer"], seed=seed, device=ctx.device, fast=fast_mode())
    ctx.metric(f"{prefix}params", count_params(model), seed=seed)

    def record(e):
        for k in CURVES:
            ctx.metric(f"{prefix}{k}", getattr(e, k), seed=seed, step=e.epoch)

    ctx.log(f"seed {seed}: training {name} ({count_params(model):,} parameters) on {len(data.x_train):,} images")
    history = train(model, data, cfg, on_epoch=record, log_fn=lambda m: ctx.log(f"seed {seed} {name}: {m}"),
                    ckpt=ctx.checkpoints)
    if history.diverged:
        ctx.metric(f"{prefix}diverged_at", history.diverged_at, seed=seed)
        ctx.state = "diverged"
    elif name == "cnn":
        store_cnn(ctx, model, data, seed, many_seeds=many_seeds)
    return history


def run_seeds(name: str, params: dict, ctx, cnn_config=None) -> None:
    """One job of cls-sweep or cls-design: ``run_model`` once per seed of the job on the job's data, with
    each seed's final accuracies (or where it diverged) in ``ctx.summary``."""
    data = load_data(params, ctx.device)
    ctx.summary = {"data": data.source, "train_images": len(data.x_train), "test_images": len(data.x_test)}
    seeds = params["seeds"]
    for seed in seeds:
        h = run_model(name, params, seed, data, ctx, many_seeds=len(seeds) > 1, cnn_config=cnn_config)
        ctx.summary[f"seed{seed}"] = {"diverged_at": h.diverged_at, **(
            {"train_acc": h.final.train_acc, "test_acc": h.final.test_acc} if h.final else {})}


# ----------------------------------------------------------------------------- reading results

def curves(data: SubmissionData, prefix: str, metric: str, jobs=None) -> dict[int, list[tuple[int, float]]]:
    """seed -> curve of ``<prefix><metric>`` over finished jobs (default: all), diverged seeds left out."""
    out = {}
    for job in data.done() if jobs is None else jobs:
        diverged = set(job.final(prefix + "diverged_at"))
        out.update({s: c for s, c in job.curve(prefix + metric).items() if s not in diverged})
    return out


def model_row(data: SubmissionData, model: str, prefix: str, jobs=None) -> tuple[dict, object]:
    """The table row of one model over ``jobs`` (default: all finished) at their seeds' final epochs, and its
    diagnosis from the mean curves. cls-sweep calls it once per grid cell."""
    jobs = data.done() if jobs is None else jobs
    params = [v for j in jobs for v in j.final(prefix + "params").values()]
    diverged = sum(len(j.final(prefix + "diverged_at")) for j in jobs)
    tr, te = curves(data, prefix, "train_acc", jobs), curves(data, prefix, "test_acc", jobs)
    seeds = sorted(set(tr) & set(te))
    final_tr = [tr[s][-1][1] for s in seeds]
    final_te = [te[s][-1][1] for s in seeds]
    secs = [v for c in curves(data, prefix, "seconds", jobs).values() for _, v in c]
    m_tr, m_te = mean(final_tr), mean(final_te)
    dx = None
    if seeds:
        _, train_mean, _ = mean_curve([tr[s] for s in seeds])
        _, test_mean, _ = mean_curve([te[s] for s in seeds])
        dx = diagnose(train_mean, test_mean) if train_mean else None
    row = {"model": model, "params": int(params[0]) if params else None, "seeds": len(seeds),
           "train_acc_mean": m_tr, "train_acc_sd": sd(final_tr), "test_acc_mean": m_te, "test_acc_sd": sd(final_te),
           "gap": (m_tr - m_te) if seeds else None,
           "diagnosis": dx.verdict if dx else ("diverged" if diverged else None),
           "epochs": len(tr[seeds[0]]) if seeds else 0, "diverged": diverged, "seconds_per_epoch": mean(secs)}
    return row, dx


def subset_note(spec: dict) -> list[str]:
    """A table note when the jobs trained or scored on the first N images only."""
    if not (spec.get("train_subset") or spec.get("test_subset")):
        return []
    return [f"subsets: first {spec.get('train_subset') or 60000} training and first "
            f"{spec.get('test_subset') or 10000} test images"]
