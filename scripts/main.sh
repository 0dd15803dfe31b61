#!/usr/bin/env bash
# The main job on the embedded default, from nothing to the report:
#   set up .venv -> generate the synthetic UCF-style set -> pretrain VGAN (CPU-sized) three
#   times (pretraining seeds 0, 1, 2: a method's result covers several pretraining runs; each
#   run has a 1-minute training budget, so the job stays under 8 minutes on a slow 2-core CPU)
#   -> transfer sweep over the three runs (fractions 0.01, 0.1, 1; 3 subset draws with their
#      seeds; pretrained vs random init, one random weight draw per run; linear and k-NN probes)
#   -> tables, figures, report. Fine-tuning is in scripts/compare_methods.sh (it triples the time).
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

echo "[main] 1/2 pretraining, 3 runs (python pretrain/run.py -m trainer.seed=0,1,2; outputs under $OUTPUTS/)"
"$PY" pretrain/run.py -m trainer.seed=0,1,2 trainer.time_limit_min=1.0 "output_root=$OUTPUTS/pretrain" \
  "data.synthetic.root=$OUTPUTS/data/synthetic" "data.cache_root=$OUTPUTS/cache" | tee "$pretrain_log"
# The exports of the runs above, named (not outputs/pretrain/LATEST, which any other pretraining
# moves); each run's folder is named by its config and data (cpu_demo-vgan-<hash>).
exports=$(sed -n 's/^discriminator exported to \([^ ]*\) .*/\1/p' "$pretrain_log" | paste -sd, -)
runs=$(echo "$exports" | tr , '\n' | wc -l)
if [ "$runs" -ne 3 ]; then
  echo "[main] pretraining exported $runs of 3 runs; see the output above" >&2
  exit 1
fi

echo "[main] 2/2 transfer sweep over the 3 runs (python transfer/sweep.py --fractions 0.01,0.1,1)"
sweep_rc=0
# two cells at a time with one thread each: on 2 cores that beats one cell on two threads
"$PY" transfer/sweep.py --fractions 0.01,0.1,1 --seeds 0,1,2 --protocols linear,knn \
  --output-root "$OUTPUTS" --max-parallel 2 --threads 1 \
  --checkpoint "$exports" | tee "$sweep_log" || sweep_rc=$?
sweep_dir=$(sed -n 's/^sweep folder: \([^ ]*\).*/\1/p' "$sweep_log")

echo "[main] done in ${SECONDS} s. Outputs:"
echo "  synthetic set        $OUTPUTS/data/synthetic (UCF-101/, ucfTrainTestlist/, unlabeled/)"
for export_path in ${exports//,/ }; do
  echo "  pretraining run      $(dirname "$export_path") (samples/, metrics.csv, losses.png)"
done
if [ -n "$sweep_dir" ]; then
  echo "  transfer sweep       $sweep_dir"
  echo "  report               $sweep_dir/report.html (and report.md; tables and figures in report/)"
fi
if [ "$sweep_rc" -ne 0 ]; then
  echo "[main] the sweep had failed cells (exit $sweep_rc): see the ledger summary in the report" >&2
fi
exit "$sweep_rc"
