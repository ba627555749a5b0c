#!/usr/bin/env bash
# The one setup step: a virtual environment at .venv with the tested stack (constraints.txt), this package (editable)
# and detectron2's Python code. Idempotent: a stamp of the files that define the environment makes a
# second run a no-op until one of them changes. Needs only python3.11 and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
stamp="$VENV/.setup-stamp"
want=$(cat pyproject.toml constraints.txt scripts/setup.sh scripts/litert-nodeps.txt scripts/install_detectron2.py | sha256sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

echo "setup: creating $VENV with $($PYTHON --version)"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24" "setuptools>=70,<82" wheel
echo "setup: installing the pinned stack (torch 2.12.0 is a large download the first time)"
# pyproject.toml declares ranges; constraints.txt holds the exact versions this project is tested with
"$VENV/bin/python" -m pip install --quiet --progress-bar off -c constraints.txt -e ".[dev,detection,mobile,onnx,ncnn,shards]"
# LiteRT's converter (optional, `--format tflite`) is not installed here: see docs/mobile.md, "LiteRT" (one line,
# `pip install --no-deps -c constraints.txt -r scripts/litert-nodeps.txt`); its tests skip, naming it, without it.
"$VENV/bin/python" scripts/install_detectron2.py
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
