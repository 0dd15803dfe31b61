#!/usr/bin/env bash
# Every pretraining method on one curve, on the embedded synthetic set: pretrain each CPU-demo
# preset (VGAN with the paper's losses, VGAN improved, contrastive (CVRL), playback speed: the
# same 3D CNN; masked video modelling: the video ViT; all at 16 frames of 32x32) three times (pretraining seeds 0, 1, 2: a method's point covers several
# pretraining runs), run the demo transfer sweep over each method's three exports (fractions 0.01,
# 0.1, 1; linear and k-NN probes; pretrained and random init, one random weight draw per run;
# subset draws with their seeds 0, 1, 2), then put the sweeps side by side with
# `python -m transfer.compare` (figure, tables, label efficiency with bootstrap intervals).
#   OUTPUTS=/elsewhere SEEDS=0,1,2,3,4 PRETRAIN_SEEDS=0,1,2,3,4 bash scripts/compare_methods.sh
#   PROTOCOLS=finetune,linear,knn bash scripts/compare_methods.sh   # with fine-tuning (about 4x longer)
# Pretraining runs every preset's full step count (TIME_LIMIT_MIN=0, not the demo's 4.5-minute
# cap), so the numbers do not depend on how busy the machine is. Everything is reused on a rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTPUTS=${OUTPUTS:-outputs}
SEEDS=${SEEDS:-0,1,2}
PRETRAIN_SEEDS=${PRETRAIN_SEEDS:-0,1,2}
PROTOCOLS=${PROTOCOLS:-linear,knn}
TIME_LIMIT_MIN=${TIME_LIMIT_MIN:-0}
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=.venv/bin/python
log=$(mktemp)
trap 'rm -f "$log"' EXIT

sweeps=()
labels=()
for preset in cpu_demo improved contrastive_cpu_demo speed_cpu_demo mae_cpu_demo; do
  echo "[methods] $preset: pretraining, seeds $PRETRAIN_SEEDS"
  "$PY" pretrain/run.py -m "experiment=$preset" "trainer.seed=$PRETRAIN_SEEDS" "output_root=$OUTPUTS/pretrain" \
    "data.synthetic.root=$OUTPUTS/data/synthetic" "data.cache_root=$OUTPUTS/cache" \
    "trainer.time_limit_min=$TIME_LIMIT_MIN" | tee "$log"
  exports=$(sed -n 's/^discriminator exported to \([^ ]*\) .*/\1/p' "$log" | paste -sd, -)
  echo "[methods] $preset: transfer sweep of $exports"
  "$PY" transfer/sweep.py --fractions 0.01,0.1,1 --seeds "$SEEDS" --protocols "$PROTOCOLS" --output-root "$OUTPUTS" \
    --max-parallel 2 --threads 1 --checkpoint "$exports" | tee "$log"
  sweeps+=("$(sed -n 's/^sweep folder: \([^ ]*\).*/\1/p' "$log")")
  labels+=("$preset")
done
"$PY" -m transfer.compare "${sweeps[@]}" --labels "$(IFS=,; echo "${labels[*]}")" \
  --out "$OUTPUTS/comparison/methods"
echo "[methods] done in ${SECONDS} s: $OUTPUTS/comparison/methods/comparison.md"
