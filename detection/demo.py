#!/usr/bin/env python3
"""Draw a ShuffleNet detector's boxes and class names on images (detectron2's demo/demo.py convention).

    python detection/demo.py --config coco_shufflenet2x.yaml --input IMG ... --output DIR --opts MODEL.WEIGHTS FILE
    python detection/demo.py --config demo_shapes --input shapes/*.png --output out --confidence-threshold 0.3 \
        --opts MODEL.WEIGHTS outputs/detection/demo_shapes/model_final.pth

Writes DIR/<image>.png (drawn by detectron2's Visualizer) and DIR/detections.json. See docs/detection.md.
"""

import sys

from shufflenet.detection.demo import cli

if __name__ == "__main__":
    sys.exit(cli())
