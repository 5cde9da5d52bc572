#!/usr/bin/env bash
# Issue 15's GPU measurements in ONE command, for a lent card's few minutes (bench/RESULTS.md, "GPU"); .whl/ and .fmnist/ are git-ignored.
#
#   here, once:         bash bench/gpu_session.sh prepare     # .whl/ (SQLAlchemy, alembic, Mako, greenlet for the
#                                                             # card's Python 3.12) and .fmnist/ (the four .gz)
#   on the device:      run(command="bash bench/gpu_session.sh", carry=[".whl", ".fmnist"], timeout_s=420)
#   a CPU dry run:      TINY=1 DEVICE=cpu OUT=/tmp/gpu-dry bash bench/gpu_session.sh
#
# Writes under $OUT: card.txt, gpu.json (bench/gpu.py: classification study, Tancik fit, inr-init), gpu-jobs.json
# (bench/gpu_jobs.py: every training kind as a job, plain / fast / stopped+resumed), packing.json (bench/packing.py
# engine mode), and a .log of each. The three budgets add up to about 5.5 minutes, leaving room for a rerun.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = prepare ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
    SQLAlchemy==2.1.9 greenlet==3.5.6 alembic==1.20.1 Mako==1.4.3 || exit 2
  mkdir -p .fmnist && cp /usr/share/datasets/fashion-mnist/*.gz .fmnist/ || exit 2
  du -sh .whl .fmnist
  exit 0
fi

OUT=${OUT:-/tmp/gpu-session}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import sqlalchemy, alembic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
[ -d .fmnist ] && export L335Q_DATA="$PWD/.fmnist"
PY=${PYTHON:-python3}
if [ -n "${TINY:-}" ]; then tiny=--tiny; jobs=4; steps=20; else tiny=; jobs=16; steps=1000; fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1; $PY -c "import torch; print(torch.__version__)") \
  > "$OUT/card.txt"
timeout 180 $PY bench/gpu.py $tiny --device "$DEVICE" --out "$OUT/gpu.json" --budget-s 150 2>&1 | tee "$OUT/gpu.log"
timeout 120 $PY bench/gpu_jobs.py $tiny --device "$DEVICE" --out "$OUT/gpu-jobs.json" --budget-s 90 2>&1 \
  | tee "$OUT/gpu-jobs.log"
timeout 45 $PY bench/packing.py --mode engine --device "$DEVICE" --jobs "$jobs" --steps "$steps" \
  --json "$OUT/packing.json" 2>&1 | tee "$OUT/packing.log"
ls -l "$OUT"
