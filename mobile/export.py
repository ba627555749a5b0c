"""Export a model to a verified mobile file: ``python mobile/export.py MODEL [--input-size 224 480x640] [--out DIR]``.

MODEL is a registered name, a package weights file or a Lightning checkpoint of this project; see
``--help`` and docs/mobile.md. All the work is in :mod:`shufflenet.mobile.cli` (console script
``shufflenet-export``).
"""

import sys

from shufflenet.mobile.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
