#!/usr/bin/env bash
# The main job on the embedded default, from nothing to the report:
#   set up .venv -> generate the synthetic UCF-style set -> pretrain VGAN (CPU-sized)
#   -> transfer sweep (fractions 0.01, 0.1, 1; 2 seeds; pretrained vs random init;
#      fine-tune and linear probe) -> tables, figures and report.
# Every stage reuses what already exists (data, clip cache, pretrain checkpoint/export, finished
# cells), so a rerun is fast and a changed setting redoes only what it affects.
#   OUTPUTS=/elsewhere bash scripts/main.sh     # write everything under another folder
set -euo pipefail
cd "$(dirname "$0")/.."
OUTPUTS=${OUTPUTS:-outputs}
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=.venv/bin/python

echo "[main] 1/2 pretraining (python pretrain/run.py; outputs under $OUTPUTS/)"
"$PY" pretrain/run.py "output_root=$OUTPUTS/pretrain" "data.synthetic.root=$OUTPUTS/data/synthetic" \
  "data.cache_root=$OUTPUTS/cache"

echo "[main] 2/2 transfer sweep (python transfer/sweep.py --fractions 0.01,0.1,1)"
"$PY" transfer/sweep.py --fractions 0.01,0.1,1 --output-root "$OUTPUTS"

echo "[main] done in ${SECONDS} s. Outputs:"
echo "  synthetic set        $OUTPUTS/data/synthetic (UCF-101/, ucfTrainTestlist/, unlabeled/)"
echo "  pretraining run      $(dirname "$(cat "$OUTPUTS/pretrain/LATEST")")"
echo "  transfer sweep       see the paths printed above (report.md / report.html in the sweep folder)"
