"""Training throughput of ShuffleNet v1 1x (g=3) vs torchvision's ShuffleNetV2 1x (fp32/bf16, NCHW/channels_last,
eager/compiled; interleaved rounds, images/s per core) and the data pipeline's decode+augment rate per worker:
``python classification/benchmark.py [--quick] [--profile] [--out FILE]``. The work is in
:mod:`shufflenet.classification.benchmark`.
"""

import sys

from shufflenet.classification.benchmark import cli

if __name__ == "__main__":
    sys.exit(cli())
