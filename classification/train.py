"""Train an ImageNet classifier with the paper's recipe: ``python classification/train.py [--config X.yaml] ...``.

No arguments: the demo run (configs/classification/demo.yaml) on the generated shapes dataset. All the work
is in :mod:`shufflenet.classification.cli`; see docs/classification.md and ``--help``.
"""

import sys
from pathlib import Path

from shufflenet.classification.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "classification"

if __name__ == "__main__":
    sys.exit(main(base_config=CONFIGS / "base.yaml", demo_config=CONFIGS / "demo.yaml"))
