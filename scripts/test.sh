#!/usr/bin/env bash
# Set up and run the whole test suite. As root (CI), it also installs and starts a real
# one-node SLURM cluster so the SLURM tests run for real; elsewhere they skip with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -x slurm/local-cluster/start.sh ] || [ -f slurm/local-cluster/start.sh ]; then
  if bash slurm/local-cluster/start.sh; then
    echo "[test] local SLURM cluster is up"
  else
    echo "[test] local SLURM cluster not started (exit $?): SLURM tests will skip with the reason"
  fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pytest -ra "$@"
