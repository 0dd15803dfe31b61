#!/usr/bin/env bash
# Create .venv (if needed) and install the suite with its test extra. Idempotent and quick
# when everything is already installed. Override the interpreter with PYTHON=python3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# pip resolves the newest torch/torchvision pair that the machine allows.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
.venv/bin/python - <<'PY'
import torch, torchvision, av, timm, sklearn, submitit, hydra
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, av {av.__version__}, "
      f"timm {timm.__version__}, scikit-learn {sklearn.__version__}, submitit {submitit.__version__}, "
      f"hydra {hydra.__version__}")
PY
