#!/usr/bin/env bash
# GPU readiness check (a few minutes on a CUDA machine): classification fit with bf16-mixed + channels_last +
# torch.compile, DDP over every GPU, kill -9 and resume, detection training and evaluation on tests/data/coco,
# training images/s of ShuffleNet v1 1x vs ShuffleNetV2 1x, the data loader's images/s. Writes one JSON
# (--out, default outputs/gpu_check.json). Without a CUDA device it says so in one line and exits 0.
#   bash scripts/gpu_check.sh [--out FILE] [--steps N]      (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" -m tools.gpu_check "$@"
