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
# The agreement test's peer, torchvision.datasets.UCF101, decodes through torchcodec, which needs
# FFmpeg's shared libraries. As root install them (Debian); elsewhere that test skips, saying why.
has_ffmpeg_libs() { ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; }
if ! has_ffmpeg_libs && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[test] installing Debian's ffmpeg libraries for torchcodec"
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ffmpeg; } \
    >/dev/null || echo "[test] could not install ffmpeg: the torchvision agreement test will skip"
fi
if has_ffmpeg_libs && ! .venv/bin/python -c "import torchcodec" 2>/dev/null; then
  # torchcodec releases are built against one torch minor: 0.17 is the one for torch 2.14.
  if .venv/bin/python -c "import torch, sys; sys.exit(not torch.__version__.startswith('2.14.'))"; then
    .venv/bin/python -m pip install --quiet 'torchcodec==0.17.*' || echo "[test] torchcodec not installed"
  else
    echo "[test] torchcodec: no known-good version for this torch; the torchvision agreement test will skip"
  fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec .venv/bin/python -m pytest -ra "$@"
