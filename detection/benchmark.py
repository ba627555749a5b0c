#!/usr/bin/env python3
"""CPU inference ms/image (per stage; eager, traced, .ptl) of ShuffleNet 1x/2x Faster R-CNN beside R50-C4.

python detection/benchmark.py --threads 1 --repeats 3 --out outputs/detection/benchmark
"""

import sys

from shufflenet.detection.benchmark import cli

if __name__ == "__main__":
    sys.exit(cli())
