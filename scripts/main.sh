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

pretrain_log=$(mktemp)
sweep_log=$(mktemp)
trap 'rm -f "$pretrain_log" "$sweep_log"' EXIT

echo "[main] 1/2 pretraining (python pretrain/run.py; outputs under $OUTPUTS/)"
"$PY" pretrain/run.py "output_root=$OUTPUTS/pretrain" "data.synthetic.root=$OUTPUTS/data/synthetic" \
  "data.cache_root=$OUTPUTS/cache" | tee "$pretrain_log"
# The export of the run above, named (not outputs/pretrain/LATEST, which any other pretraining moves);
# its folder is named by its config and data (cpu_demo-vgan-<hash>).
export_path=$(sed -n 's/^discriminator exported to \([^ ]*\) .*/\1/p' "$pretrain_log")
run_dir=$(dirname "$export_path")

echo "[main] 2/2 transfer sweep (python transfer/sweep.py --fractions 0.01,0.1,1)"
sweep_rc=0
# two cells at a time with one thread each: on 2 cores that beats one cell on two threads
"$PY" transfer/sweep.py --fractions 0.01,0.1,1 --output-root "$OUTPUTS" --max-parallel 2 --threads 1 \
  --checkpoint "$export_path" | tee "$sweep_log" || sweep_rc=$?
sweep_dir=$(sed -n 's/^sweep folder: \([^ ]*\).*/\1/p' "$sweep_log")

echo "[main] done in ${SECONDS} s. Outputs:"
echo "  synthetic set        $OUTPUTS/data/synthetic (UCF-101/, ucfTrainTestlist/, unlabeled/)"
echo "  pretraining run      $run_dir (samples/, metrics.csv, losses.png)"
if [ -n "$sweep_dir" ]; then
  echo "  transfer sweep       $sweep_dir"
  echo "  report               $sweep_dir/report.html (and report.md; tables and figures in report/)"
fi
if [ "$sweep_rc" -ne 0 ]; then
  echo "[main] the sweep had failed cells (exit $sweep_rc): see the ledger summary in the report" >&2
fi
exit "$sweep_rc"
