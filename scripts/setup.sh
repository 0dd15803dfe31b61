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
# pip resolves the newest torch/torchvision pair that the machine allows. Skipped when the
# packaging files are unchanged since the last successful install (a rerun starts at once).
stamp=.venv/.vganbench-install-stamp
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import pretrain, transfer, videodata, timm, av, submitit, hydra" 2>/dev/null; then
  log=$(mktemp)
  if ! { .venv/bin/python -m pip install --quiet --upgrade pip && .venv/bin/python -m pip install --quiet -e '.[test]'; } >"$log" 2>&1; then
    cat "$log"; rm -f "$log"
    echo "[setup] pip install failed (output above)" >&2
    exit 1
  fi
  # setuptools' multi-line notice about editable installs is noise here; keep anything else.
  grep -v -e BuildBackendWarning -e '^ *!!$' -e '^ *\*\**$' -e 'Please be careful with folders' \
    -e 'name as your package' -e 'WheelFile(wheel_path' -e '^ *$' "$log" || true
  rm -f "$log"
  echo "$want" > "$stamp"
fi
.venv/bin/python - <<'PY'
import torch, torchvision, av, timm, sklearn, submitit, hydra
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, av {av.__version__}, "
      f"timm {timm.__version__}, scikit-learn {sklearn.__version__}, submitit {submitit.__version__}, "
      f"hydra {hydra.__version__}")
PY
