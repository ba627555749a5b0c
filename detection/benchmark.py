#!/usr/bin/env python3
"""CPU inference ms/image of ShuffleNet 1x/2x Faster R-CNN beside detectron2's R50-C4, at 300 and 600.

    python detection/benchmark.py --repeats 3 --out outputs/detection/benchmark
"""

import sys

from shufflenet.detection.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
