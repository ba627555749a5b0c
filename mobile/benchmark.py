"""Reproduce the paper's Table 8 (latency) here: ``python mobile/benchmark.py [--quick] [--threads N]``.

Writes benchmark.json / .md / .png under --out (default outputs/mobile/benchmark); see docs/mobile.md.
All the work is in :mod:`shufflenet.mobile.benchmark`.
"""

import sys

from shufflenet.mobile.benchmark import cli

if __name__ == "__main__":
    sys.exit(cli())
