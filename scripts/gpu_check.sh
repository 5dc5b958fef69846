#!/usr/bin/env bash
# GPU check of issue 18: perceive, teach, align and distill on CUDA with tiny models (see scripts/gpu_check.py).
# Usage: scripts/gpu_check.sh [--device cuda|cpu] [--output DIR]   (exit 3: no CUDA, nothing checked)
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" scripts/gpu_check.py "$@"
