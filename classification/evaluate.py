"""Single-crop evaluation: ``python classification/evaluate.py --checkpoint X --data.root Y``.

Resize 256, center crop 224 (the paper's protocol); top-1/top-5 accuracy and error as JSON and as a row of the
paper's tables. Works with Lightning checkpoints, package weights files and converted checkpoints. All the
work is in :mod:`shufflenet.classification.evaluate` (also the ``shufflenet-eval`` console script).
"""

import sys

from shufflenet.classification.evaluate import cli

if __name__ == "__main__":
    sys.exit(cli())
