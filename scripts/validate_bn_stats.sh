#!/usr/bin/env bash
# Choose features.bn_stats (the BatchNorm statistics a frozen probe normalises with) without a
# test list: the demo recipe's linear and k-NN probes of three cpu_demo pretraining runs (seeds
# 0, 1, 2) in development mode (`transfer/sweep.py --validate`: every cell scored on a
# group-disjoint quarter held out of split 1's training list, subsets drawn from the rest), with
# the checkpoint's stored statistics and with statistics re-estimated on the training videos'
# clips, at 10% and 100% of the labels, subset draws 0, 1, 2. Prints each variant's mean
# validation accuracy with its 95% interval (pretrained and random init), and the paired
# difference per pretrained cell.
#   OUTPUTS=/elsewhere bash scripts/validate_bn_stats.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUTPUTS=${OUTPUTS:-outputs}
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
PY=.venv/bin/python
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# the same runs as scripts/compare_methods.sh's cpu_demo (reused when it ran under this OUTPUTS)
"$PY" pretrain/run.py -m experiment=cpu_demo trainer.seed=0,1,2 trainer.time_limit_min=0 \
  "output_root=$OUTPUTS/pretrain" "data.synthetic.root=$OUTPUTS/data/synthetic" \
  "data.cache_root=$OUTPUTS/cache" > "$log"
exports=$(sed -n 's/^discriminator exported to \([^ ]*\) .*/\1/p' "$log" | paste -sd, -)

for stats in stored train_videos; do
  "$PY" transfer/sweep.py --validate --fractions 0.1,1 --seeds 0,1,2 --protocols linear,knn \
    --output-root "$OUTPUTS" --max-parallel 2 --threads 1 --checkpoint "$exports" --no-progress \
    --out "$OUTPUTS/transfer/validate-bn-$stats" "features.bn_stats=$stats" > "$log"
done
"$PY" - "$OUTPUTS" <<'EOF_PY'
import sys
from pathlib import Path

import numpy as np

from transfer.report.stats import aggregate, current_entries, result_rows

root = Path(sys.argv[1], "transfer")
tables, scores = {}, {}
for stats in ("stored", "train_videos"):
    entries = current_entries(root / f"validate-bn-{stats}")
    tables[stats] = {(r["protocol"], r["init"], r["rule"]): r for r in aggregate(entries)}
    scores[stats] = {(r["protocol"], r["init"], r["rule"], r["replicate"], r["subset_seed"], r["seed"]): r["value"]
                     for r in result_rows(entries, "video_acc")}
print("protocol init        labels  stored (95% CI)          train_videos (95% CI)    paired diff (mean, min, max)")
for key in sorted(tables["stored"]):
    a, b = tables["stored"][key], tables["train_videos"][key]
    diffs = [100 * (scores["train_videos"][k] - v) for k, v in scores["stored"].items() if k[:3] == key]
    print(f"{key[0]:8s} {key[1]:12s} {key[2]:6s}  "
          f"{100 * a['mean']:.1f} [{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}]".ljust(24) + "  "
          + f"{100 * b['mean']:.1f} [{100 * b['ci_low']:.1f}, {100 * b['ci_high']:.1f}]".ljust(24)
          + f"  {np.mean(diffs):+.1f} ({min(diffs):+.1f}, {max(diffs):+.1f}), {len(diffs)} cells")
EOF_PY
