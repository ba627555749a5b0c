"""Training and data-loading throughput: ``python classification/benchmark.py [--threads 2] [--out FILE]``.

ShuffleNet 1x (g=3) beside torchvision's ShuffleNetV2 1x under the same loop (batch 32 at 224), and the real
data pipeline's images/s. All the work is in :mod:`shufflenet.classification.benchmark`.
"""

import sys

from shufflenet.classification.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
