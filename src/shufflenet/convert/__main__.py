"""``python -m shufflenet.convert SRC --out OUT``: see :mod:`shufflenet.convert.checkpoints`."""

import sys

from .checkpoints import cli

sys.exit(cli())
