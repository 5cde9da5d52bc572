#!/bin/bash
# The GPU measurements of the practical's open questions, as one run on a lent GPU (research/README.md):
#   1. CNN designs at the full recipe (research/cls_confirm.py), 5 seeds each;
#   2. the mean-colour initialiser, 100 seeds at the practical's settings on the example specs' images and on
#      three pictures no sample shows, and the standard initialisers on two of them (research/inr_init.py fit);
#   3. the automatic σ against the σ grid's best on 21 samples + 11 unseen pictures at 64 and 128 px
#      (research/autosigma_fidelity.py).
# The three run side by side on the one GPU. Images are read from IMAGES (PNG files of the samples, written by
# `python -c` in research/README.md), so the machine needs no scikit-image data files.
#   OUT=dir IMAGES=.gpu/images DEVICE=cuda LIMIT_S=330 bash research/gpu_issue13.sh
# TINY=1 runs every part at toy sizes (a check of the plumbing on a CPU).
set -u
OUT=${OUT:-/tmp/gpu13}; IMAGES=${IMAGES:-.gpu/images}; DEVICE=${DEVICE:-cuda}; LIMIT_S=${LIMIT_S:-330}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ "${TINY:-0}" = 1 ]; then
  CLS="--designs c32-64-128,c64-64-128 --seeds 0 --epochs 1 --train-subset 256 --procs 2"
  FIT="--resolution 16 --steps 20"; MC_SEEDS=0-1; STD_SEEDS=0-1; MC_IMAGES="astronaut horse"; STD_IMAGES=astronaut
  AS="--resolutions 32 --steps 20 --seeds 2"; AS_A=sky; AS_B=grass; AS_C=horse
else
  CLS="--seeds 0-4 --epochs 10 --procs 8"
  FIT="--resolution 64 --steps 1000"; MC_SEEDS=0-99; STD_SEEDS=0-49
  MC_IMAGES="astronaut camera coffee chelsea sky grass horse phantom motorcycle"; STD_IMAGES="astronaut horse"
  AS="--resolutions 64,128 --seeds 4"
  AS_A=sky,grass,astronaut,coffee,camera,chelsea,rocket,gravel,brick,moon,coins
  AS_B=clock,page,text,colorwheel,immunohistochemistry,hubble,retina,cell,microaneurysms,logo,horse
  AS_C=phantom,motorcycle,astronaut-face,coffee-cup,rocket-towers,hubble-corner,chelsea-face,ihc-corner,clock-motion,motorcycle-right
fi
# a second run can take other parts: CLS (cls_confirm.py arguments), MC_IMAGES / STD_IMAGES ("" skips), AS_PARTS
CLS=${CLS_ARGS:-$CLS}; MC_IMAGES=${MC_IMAGES_OVERRIDE-$MC_IMAGES}; STD_IMAGES=${STD_IMAGES_OVERRIDE-$STD_IMAGES}
STD_SEEDS=${STD_SEEDS_OVERRIDE:-$STD_SEEDS}; AS_PARTS=${AS_PARTS-A B C}
DEADLINE=$(( $(date +%s) + LIMIT_S ))
left() { echo $(( DEADLINE - $(date +%s) > 1 ? DEADLINE - $(date +%s) : 1 )); }
paths() { local IFS=,; for n in $1; do printf '%s/%s.png,' "$IMAGES" "$n"; done | sed 's/,$//'; }

(timeout "$LIMIT_S" $PY research/cls_confirm.py $CLS --device "$DEVICE" --out "$OUT/cls-confirm.jsonl" \
  > "$OUT/cls-confirm.log" 2>&1) &
pids=($!)
(for im in $MC_IMAGES; do
   timeout "$(left)" $PY research/inr_init.py fit --device "$DEVICE" --image "$IMAGES/$im.png" $FIT --seeds $MC_SEEDS \
     --init mean-colour --out "$OUT/inr-init-fit.jsonl" || break
 done
 for im in $STD_IMAGES; do
   timeout "$(left)" $PY research/inr_init.py fit --device "$DEVICE" --image "$IMAGES/$im.png" $FIT --seeds $STD_SEEDS \
     --init default,kaiming-normal,kaiming-uniform,xavier-normal,xavier-uniform --out "$OUT/inr-init-fit.jsonl" || break
 done) > "$OUT/inr-init.log" 2>&1 &
pids+=($!)
for part in $AS_PARTS; do
  eval list=\$AS_$part
  (timeout "$LIMIT_S" $PY research/autosigma_fidelity.py --images "$(paths "$list")" $AS --device "$DEVICE" \
     --max-seconds $((LIMIT_S - 60)) --out "$OUT/autosigma-fidelity.jsonl" > "$OUT/autosigma-$part.log" 2>&1) &
  pids+=($!)
done
( while sleep 30; do date +%T; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null; done ) &
MON=$!
wait "${pids[@]}"
kill $MON 2>/dev/null
for f in "$OUT"/*.log; do echo "== $f"; tail -n 25 "$f"; done
