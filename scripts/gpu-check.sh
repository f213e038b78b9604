#!/usr/bin/env bash
# The GPU paths, timed on one CUDA GPU (under 8 minutes): QLoRA with bitsandbytes NF4, bf16 LoRA with
# the project's loop, and the server on CUDA, on SmolLM2. Needs the project's .venv plus a CUDA
# build of torch and bitsandbytes (pip install -e '.[gpu]'); prints one JSON line per check.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
exec timeout 480 "$PY" scripts/gpu_check.py
