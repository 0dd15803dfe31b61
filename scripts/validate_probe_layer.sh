#!/usr/bin/env bash
# Choose the demo recipe's probe layer and pooling without a test list: the linear probe of three
# cpu_demo pretraining runs (seeds 0, 1, 2) in development mode (`transfer/sweep.py --validate`:
# every cell scored on a group-disjoint quarter held out of split 1's training list, subsets
# drawn from the rest), for each layer x pooling, at 10% and 100% of the labels, subset draws
# 0, 1, 2. Prints each variant's mean validation accuracy (pretrained and random init) and the
# one with the best pretrained mean over the two label counts.
#   OUTPUTS=/elsewhere bash scripts/validate_probe_layer.sh
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

for variant in penultimate:avg penultimate:avgmax block4:avgmax block3:avg block3:avgmax; do
  layer=${variant%%:*}
  pooling=${variant##*:}
  "$PY" transfer/sweep.py --validate --fractions 0.1,1 --seeds 0,1,2 --protocols linear \
    --output-root "$OUTPUTS" --max-parallel 2 --threads 1 --checkpoint "$exports" --no-progress \
    --out "$OUTPUTS/transfer/validate-$layer-$pooling" "features.layer=$layer" "features.pooling=$pooling" \
    > "$log"
done
"$PY" - "$OUTPUTS" <<'EOF'
import sys
from pathlib import Path

from transfer.report.stats import aggregate, current_entries

rows = []
for folder in sorted(Path(sys.argv[1], "transfer").glob("validate-*")):
    table = aggregate(current_entries(folder))
    means = {(r["init"], r["rule"]): r for r in table}
    pretrained = [r["mean"] for (init, _), r in means.items() if init == "pretrained"]
    rows.append((sum(pretrained) / len(pretrained), folder.name, means))
print("variant                        pretrained f0.1 / f1 (95% CI)                random f0.1 / f1")
for score, name, means in sorted(rows, reverse=True):
    p = [means[("pretrained", rule)] for rule in ("f0.1", "f1")]
    r = [means[("random", rule)] for rule in ("f0.1", "f1")]
    print(f"{name[9:]:22s} " + " / ".join(f"{100 * x['mean']:.1f} [{100 * x['ci_low']:.1f}, {100 * x['ci_high']:.1f}]"
                                           for x in p)
          + "   " + " / ".join(f"{100 * x['mean']:.1f}" for x in r))
print(f"best on validation (pretrained mean over 10% and 100%): {sorted(rows, reverse=True)[0][1][9:]}")
EOF
