#!/usr/bin/env python3
"""Train / evaluate a ShuffleNet Faster R-CNN with detectron2 (paper Sec. 4.4).

    python detection/train_net.py --config coco_shufflenet2x.yaml MODEL.WEIGHTS model.pth
    python detection/train_net.py --config coco_shufflenet1x_300 --eval-only MODEL.WEIGHTS model_final.pth
    python detection/train_net.py --config demo_shapes

detectron2's usual flags (--config-file, --eval-only, --resume, --num-gpus, --num-machines, KEY VALUE
overrides) plus --config NAME and --register-coco NAME JSON IMAGE_DIR. See docs/detection.md.
"""

import sys

from shufflenet.detection.engine import cli

if __name__ == "__main__":
    sys.exit(cli())
