"""PURPOSE: the evidence for flipping ``L335Q_FAST``'s default (``config.fast_mode``: ``off`` -> ``auto``). Every task
kind that trains runs ONE small but real job through the whole job path (``runner.execute_job``, checkpoints,
commit) on a throwaway embedded SQLite database, three times per kind on ``--device``:
  plain     L335Q_FAST=off (the plain loops);
  fast      L335Q_FAST=auto (``on`` with ``--device cpu``: auto is off there): classification's fused loop, the
            fields' full-batch steps, both as CUDA graphs on CUDA;
  stopped   the fast job again, a stop requested (``checkpoints.stop_event``) once its progress passes a point,
            then run again from its checkpoint.
Per kind: seconds of plain and fast, each run's state and error, and the largest absolute difference per metric
name (``*seconds`` left out) of fast against plain and of stopped+resumed against fast. ``bench/gpu.py`` measures
the engines alone; this is the jobs. Flip the default when every kind is ``done`` both ways, fast is not slower,
the differences are float rounding (classification: a few images, ~1e-3 in the losses) and resumed == fast.
ONE JSON file (``--out``), rewritten after each kind; kinds that would overrun ``--budget-s`` are skipped (listed).
GPU machine (its image lacks SQLAlchemy, alembic and Mako: carry them as wheels, see the device README; and the four
Fashion-MNIST .gz files, here in /usr/share/datasets/fashion-mnist, copied into a carried, git-ignored .fmnist/):
  pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64
      -d .whl SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3          (here, once; carry: [".whl", ".fmnist"])
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site &&
  L335Q_DATA=.fmnist PYTHONUNBUFFERED=1 timeout 300 python3 bench/gpu_jobs.py --out $OUT/gpu-jobs.json --budget-s 240
CPU (the test, tests/test_fast_jobs.py): python bench/gpu_jobs.py --tiny --device cpu --out tiny.json
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))          # gpu_common, job_rows (also under runpy)

from gpu_common import Bench, r3  # noqa: E402
from sqlalchemy import select  # noqa: E402

from job_rows import numbers, stop_when  # noqa: E402
from l335q.checkpoints import PLAN_STAGE, loads  # noqa: E402
from l335q.db import Checkpoint, Job, session_scope  # noqa: E402
from l335q.fields.engine import CHECK_EVERY  # noqa: E402
from l335q.runner import execute_job  # noqa: E402
from l335q.submit import create_submission  # noqa: E402

KINDS = ("cls-compare", "cls-sweep", "inr-init", "inr-arch", "ffn-sigma", "upsample")
SIZES = {False: ({"train_subset": 10000, "test_subset": 2000, "epochs": 3},
                 {"image": "sample:astronaut", "resolution": 64, "steps": 2000, "depth": 4, "width": 256,
                  "seeds": "0-3", "features": 128, "sigma": 10}),
         True: ({"train_subset": 256, "test_subset": 128, "epochs": 3},
                {"image": "sample:camera", "resolution": 12, "steps": 1500, "depth": 3, "width": 24, "seeds": "0-1",
                 "features": 8, "sigma": 3})}
STOP_S = 0.15        # L335Q_LEASE_S of the stopped run: progress reaches the job's row every 0.05 s


def specs(tiny: bool, device: str) -> dict[str, tuple[dict, tuple[int, int]]]:
    """kind -> (spec of one job, (stage, done): the progress after which the stopped run is asked to stop)."""
    cls, f = ({**d, "device": device} for d in SIZES[tiny])
    raw = {k: v for k, v in f.items() if k not in ("features", "sigma")}
    gauss, tick = {**f, "encoding": "gaussian"}, (0, CHECK_EVERY)
    return {"cls-compare": ({"task": "cls-compare", **cls, "seeds": [0]}, (1, 1)),   # the CNN, after its epoch 1
            "cls-sweep": ({"task": "cls-sweep", **cls, "model": "cnn", "optimizer": "sgd-momentum", "lr": 0.01,
                           "batch_size": 64 if tiny else 32, "seeds": [1]}, (0, 1)),
            "inr-init": ({"task": "inr-init", **raw, "initialiser": "default", "output": "relu", "seed_group": 4},
                         tick),
            "inr-arch": ({"task": "inr-arch", **gauss, "loss": "huber", "split": "every-other"}, tick),
            "ffn-sigma": ({"task": "ffn-sigma", **f, "sigma": [f["sigma"]], "auto": False}, tick),
            "upsample": ({"task": "upsample", **gauss, "factor": 2, "store_upsampled": True}, tick)}


def max_diffs(a: dict, b: dict) -> dict[str, float | str]:
    """Per metric name: the largest |a - b| over its rows, or "rows differ" (a row, or a null, in one only)."""
    out: dict[str, float | str] = {}
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        d = "rows differ" if key not in a or key not in b or (x is None) != (y is None) else abs((x or 0) - (y or 0))
        out[key[2]] = "rows differ" if "rows differ" in (d, out.get(key[2])) else max(out.get(key[2], 0.0), d)
    return dict(sorted(out.items()))


def stopped_once(b: Bench, job_id: int, stage: int, done: int, out: dict) -> None:
    """Run the job with ``stop_event`` set once its progress (in the job's row) reaches ``done`` in ``stage``."""
    os.environ["L335Q_LEASE_S"] = str(STOP_S)
    finish = stop_when(job_id, stage, done, seen=out)
    try:
        out["first_state"], out["first_seconds"] = b.timed(lambda: execute_job(job_id))
    finally:
        finish()
        del os.environ["L335Q_LEASE_S"]
    with session_scope() as s:
        rows = list(s.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.stage)))
    out["plan"] = next((loads(c.data) for c in rows if c.stage == PLAN_STAGE), None)     # field kinds: seed chunks
    out["checkpoints"] = [{"stage": c.stage, "step": c.step, "fused": "fused" in loads(c.data)}
                          for c in rows if c.stage != PLAN_STAGE]


def run(b: Bench, spec: dict, fast: str, stop_at: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """One job of ``spec`` under ``L335Q_FAST=fast`` (stopped at ``stop_at`` and resumed): what it did, its rows."""
    os.environ["L335Q_FAST"] = fast
    _, (job_id,) = create_submission({**spec, "fresh": True})       # plain and fast: each computed
    out: dict = {"fast_setting": fast}
    if stop_at:
        stopped_once(b, job_id, *stop_at, out)
    out["state"], out["seconds"] = b.timed(lambda: execute_job(job_id))
    with session_scope() as s:
        job = s.get(Job, job_id)
        out.update(error=job.error, attempts=job.attempts, fast_path=(job.result or {}).get("fast"))
    b.say(f"{spec['task']} L335Q_FAST={fast}{' stopped' if stop_at else ''}: {out['state']} in {out['seconds']:.2f} s")
    return {k: r3(v) if isinstance(v, float) else v for k, v in out.items()}, numbers(job_id)


def bench_kind(b: Bench, kind: str, spec: dict, stop_at: tuple[int, int]) -> None:
    res = b.out["kinds"][kind] = {"spec": spec, "stop_at": {"stage": stop_at[0], "done": stop_at[1]}}
    res["plain"], plain = run(b, spec, "off")
    if b.left() < 2.5 * res["plain"]["seconds"]:
        return b.out["skipped"].append(f"{kind}: fast and stopped runs ({b.left():.0f} s left)")
    res["fast"], rows = run(b, spec, b.out["fast_setting"])
    res["stopped"], resumed = run(b, spec, b.out["fast_setting"], stop_at)
    res["fast_vs_plain"], res["resumed_vs_fast"] = max_diffs(rows, plain), max_diffs(resumed, rows)
    res["resumed_equals_fast"] = resumed == rows
    b.say(f"{kind}: fast vs plain {res['fast_vs_plain']}; resumed == fast: {res['resumed_equals_fast']}")


def table(out: dict) -> str:
    lines = [f"{'kind':12}{'plain s':>9}{'fast s':>9}  {'worst |fast - plain|':36}{'resumed==fast':>14}  states"]
    for kind, r in out["kinds"].items():
        p, f, st, diffs = r.get("plain", {}), r.get("fast", {}), r.get("stopped", {}), r.get("fast_vs_plain", {})
        worst = next((k for k, v in diffs.items() if isinstance(v, str)), None) or max(diffs, key=diffs.get, default="")
        lines.append(f"{kind:12}{p.get('seconds', '-'):>9}{f.get('seconds', '-'):>9}  "
                     f"{worst + ' ' + str(diffs.get(worst)):36}{str(r.get('resumed_equals_fast', '-')):>14}  "
                     f"{p.get('state')}/{f.get('state')}/{st.get('first_state')}->{st.get('state')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU test)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget-s", type=float, default=240.0)
    ap.add_argument("--image", help="the field jobs' image (a PNG path) instead of the sample (a machine without "
                                    "scikit-image's data files)")
    args = ap.parse_args(argv)
    if args.image:
        SIZES[args.tiny][1]["image"] = str(Path(args.image).resolve())
    with tempfile.TemporaryDirectory(prefix="l335q-gpu-jobs-") as home:     # the throwaway embedded database
        os.environ.update(XDG_DATA_HOME=home, L335Q_PACK_MAX="1", L335Q_CHECKPOINT_S="3600")   # no periodic save:
        for name in ("L335Q_DATABASE_URL", "L335Q_BROKER_URL", "L335Q_DEVICE", "L335Q_LEASE_S"):  # the stop's own
            os.environ.pop(name, None)                                                            # save resumes
        b = Bench(args)
        del b.out["sizes"], b.out["how"]                                  # bench/gpu.py's
        b.out.update(kinds={}, fast_setting="auto" if b.cuda else "on")    # auto is off on the CPU: on runs eagerly
        all_specs, longest = specs(args.tiny, args.device), 0.0
        if b.cuda:                          # CUDA context, data on the device, first captures (CPU: no need)
            warm = [{**all_specs["cls-compare"][0], "epochs": 1, "train_subset": 128, "test_subset": 128},
                    {**all_specs["inr-init"][0], "steps": 2 * CHECK_EVERY}]
            _, b.out["warm_up_s"] = b.timed(lambda: [run(b, w, f) for w in warm for f in ("off", "auto")])
        for kind in KINDS:
            if b.left() < 1.2 * longest:
                b.out["skipped"].append(f"{kind} ({b.left():.0f} s left, the longest kind took {longest:.0f} s)")
                continue
            t0 = b.left()
            try:
                bench_kind(b, kind, *all_specs[kind])
            except Exception as exc:                   # recorded; the other kinds go on
                b.error(kind, exc)
            longest = max(longest, t0 - b.left())
            b.save()
    print(table(b.out))
    print("skipped:", b.out["skipped"] or "none", "| errors:", list(b.out["errors"]) or "none")
    return 0


if __name__ == "__main__":
    sys.exit(main())
