#!/usr/bin/env bash
# Create .venv and install codestage into it. Idempotent: a second run only checks.
# On a machine without an NVIDIA GPU, a CPU build of PyTorch goes in first so that the
# package's `torch>=2.4` requirement does not pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$VPY" -m pip install --quiet "torch>=2.4"
  else
    "$VPY" -m pip install --quiet "torch==2.13.0" || "$VPY" -m pip install --quiet "torch>=2.4"
  fi
fi
if ! "$VPY" -c "import codestage, pytest, hypothesis" >/dev/null 2>&1 || [ pyproject.toml -nt .venv/.codestage-installed ]; then
  "$VPY" -m pip install --quiet -e ".[test]"
  touch .venv/.codestage-installed
fi
