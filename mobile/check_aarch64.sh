#!/usr/bin/env bash
# Emulated aarch64 check: load the exported .ptl (and, where the extras are installed, the ONNX and ncnn files)
# in an aarch64 Python (torch 2.9.1, the newest aarch64 CPU
# wheel that imports there) under qemu-user and reproduce the x86 outputs, for the file as written
# (bytecode v8) and backported to v7. Slow (10+ minutes: the emulated `import torch` alone takes ~45 s);
# not part of CI: `make check-aarch64`. Timings it prints are emulator timings, NOT ARM timings.
#
# Needs root for apt-get (Debian/Ubuntu): qemu-user-static, and arm64 .debs fetched with
# `apt-get download` (unpacked with dpkg -x into a folder; nothing arm64 is installed system-wide).
# Everything is cached under $AARCH64_DIR (default build/aarch64); a second run reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DIR=${AARCH64_DIR:-build/aarch64}
TORCH_AARCH64=${TORCH_AARCH64:-torch==2.9.1}
MODELS=${MODELS:-shufflenet_v1_x0_5_g3}
SIZES=${SIZES:-224 480x640}
ROOT="$DIR/root"; SITE="$DIR/site"; DEBS="$DIR/debs"; WHEELS="$DIR/wheels"; CASES="$DIR/cases"
mkdir -p "$ROOT" "$SITE" "$DEBS" "$WHEELS"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

step() { echo "[aarch64] $(date +%H:%M:%S) $*"; }

# The host side first: a bad MODELS / SIZES is one `error:` line and exit 2 before any download.
step "exporting on $(uname -m) with $("$PY" -c 'import torch; print("torch", torch.__version__)')"
rm -rf "$CASES"
# shellcheck disable=SC2086
"$PY" -m tools.mobile_aarch64 prepare "$CASES" --models $MODELS --input-size $SIZES --backport-to 7

if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  step "installing qemu-user-static"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq qemu-user-static >/dev/null
fi

PKGS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 zlib1g libexpat1 libffi8 libssl3 libstdc++6 libgcc-s1 libgomp1"
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    step "dpkg --add-architecture arm64"
    $SUDO dpkg --add-architecture arm64
  fi
  step "apt-get update (arm64 package lists)"
  $SUDO apt-get update -qq
  step "downloading arm64 packages: $PKGS"
  (cd "$DEBS" && for p in $PKGS; do apt-get download -qq "$p:arm64"; done)
  for deb in "$DEBS"/*.deb; do dpkg -x "$deb" "$ROOT"; done
fi
# qemu-user (7.2, Debian 12) hands the emulated process the host's x86 /proc/cpuinfo; cpuinfo (used by ONNX Runtime,
# XNNPACK, torch) finds no ARM processor in it, and onnxruntime 1.32's native module segfaults at import (NULL
# dereference after reading it). qemu looks every absolute path up under its -L prefix first, so the emulated
# process reads this one-core aarch64 (Cortex-A72) description instead; ISA features still come from qemu's
# HWCAP (auxv), as on a board.
mkdir -p "$ROOT/proc" "$ROOT/sys/devices/system/cpu"
printf 'processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' >"$ROOT/proc/cpuinfo"
echo 0 >"$ROOT/sys/devices/system/cpu/possible"
echo 0 >"$ROOT/sys/devices/system/cpu/present"

if [ ! -d "$SITE/torch" ]; then
  step "downloading the aarch64 wheels ($TORCH_AARCH64, CPU build with XNNPACK)"
  # --no-deps: the wheel's metadata names CUDA packages that have no aarch64 build; the lite interpreter
  # needs only torch's pure-Python dependencies, fetched next.
  "$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11 \
    --implementation cp --no-deps -d "$WHEELS" "$TORCH_AARCH64"
  "$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11 \
    --implementation cp -d "$WHEELS" typing_extensions sympy filelock networkx jinja2 fsspec
  for whl in "$WHEELS"/*.whl; do "$PY" -m zipfile -e "$whl" "$SITE"; done
fi


step "running the device side under qemu-aarch64-static (emulated; slow)"
PYTHONHOME="$(realpath "$ROOT")/usr" PYTHONPATH="$(realpath "$SITE")" PYTHONDONTWRITEBYTECODE=1 \
  qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "$CASES/device_check.py" "$CASES"
# ONNX Runtime and ncnn (correctness only): their aarch64 wheels and numpy in a second folder.
RTSITE="$DIR/site-runtimes"; RTWHEELS="$DIR/wheels-runtimes"
if [ -s "$CASES/runtime_cases.json" ] && [ "$(cat "$CASES/runtime_cases.json")" != "[]" ]; then
  if [ ! -d "$RTSITE/numpy" ]; then
    step "downloading the aarch64 wheels of onnxruntime, ncnn and numpy"
    mkdir -p "$RTWHEELS" "$RTSITE"
    "$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
      --python-version 3.11 --implementation cp -d "$RTWHEELS" onnxruntime ncnn numpy
    for whl in "$RTWHEELS"/*.whl; do "$PY" -m zipfile -e "$whl" "$RTSITE"; done
  fi
  step "running the ONNX / ncnn device side under qemu-aarch64-static (emulated; slow)"
  PYTHONHOME="$(realpath "$ROOT")/usr" PYTHONPATH="$(realpath "$RTSITE")" PYTHONDONTWRITEBYTECODE=1 \
    qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11" "$CASES/device_check_runtimes.py" "$CASES"
fi
step "done"
