"""What is in a photo: ``python classification/predict.py IMAGE|FOLDER ... --model NAME --weights DEFAULT|FILE``.

Top-k class names with probabilities (``--topk 5``), ``--json FILE`` to keep them. All the work is in
:mod:`shufflenet.classification.predict` (also the ``shufflenet-predict`` console script).
"""

import sys

from shufflenet.classification.predict import cli

if __name__ == "__main__":
    sys.exit(cli())
