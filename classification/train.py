"""Train an ImageNet classifier with the paper's recipe: ``python classification/train.py [--config NAME] ...``.

Without ``--data.root``: the demo run (configs/classification/demo.yaml) on the generated shapes dataset. All the
work is in :mod:`shufflenet.classification.cli` (also the ``shufflenet-train`` console script); see
docs/classification.md and ``--help``.
"""

import sys

from shufflenet.classification.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
