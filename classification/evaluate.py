"""Single-crop evaluation: ``python classification/evaluate.py RUN_FOLDER`` or ``--checkpoint X --data-root Y``.

Resize 256, center crop 224 (the paper's protocol; a run's own sizes for this project's runs); top-1/top-5 accuracy
and error as JSON and as a row of the paper's tables. Works with run folders, Lightning checkpoints, package weights
files, converted checkpoints and model names. All the work is in :mod:`shufflenet.classification.evaluate` (also
the ``shufflenet-eval`` console script).
"""

import sys

from shufflenet.classification.evaluate import cli

if __name__ == "__main__":
    sys.exit(cli())
