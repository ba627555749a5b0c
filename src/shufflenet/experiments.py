"""``python -m shufflenet.experiments {table2,table3,table4} --data.root DIR --steps N --seeds 3``.

The paper's ablations (Table 2: groups, Table 3: channel shuffle, Table 4: other units in the same
skeleton) trained with one budget per row and several seeds, interleaved and resumable. The work is done
by :mod:`shufflenet.classification.ablations`; this module only parses the command line. See
docs/ablations.md.

    python -m shufflenet.experiments table3 --data.root /data/cifar10 --steps 600 --seeds 3
    python -m shufflenet.experiments table2 --data.root /data/cifar10 --steps 600 --width 0.25
    python -m shufflenet.experiments table4 --data.root /data/cifar10 --steps 600 --width 13 38
    python -m shufflenet.experiments table3 --data.root D --steps 600 --rows 'shufflenet_v1_x0_25_g8*'
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

__all__ = ["main", "build_parser"]


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one 'error:' line and exit 2, not argparse's usage block
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m shufflenet.experiments",
        description="Train the rows of one of the paper's ablation tables with the same budget and several "
        "seeds (interleaved, resumable); write results.json/.md/.png beside the paper's numbers.",
    )
    p.add_argument("table", help="table2 (groups), table3 (channel shuffle) or table4 (units at equal complexity)")
    p.add_argument(
        "--data.root",
        "--data-root",
        dest="data_root",
        required=True,
        help="ImageNet-layout folder: train/<class>/*, val/<class>/* (or test/)",
    )
    p.add_argument("--steps", type=int, required=True, help="optimizer steps per run (the same for every row)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row: 0 .. N-1 (default 3)")
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        metavar="NAME",
        help="only these rows (model names or glob patterns, e.g. 'shufflenet_v1_x0_25_g8*')",
    )
    p.add_argument(
        "--width",
        nargs="+",
        type=float,
        default=None,
        help="table2/3: width multipliers (default 0.25 0.5); table4: MFLOPs rows (default 13 38)",
    )
    p.add_argument("--image-size", type=int, default=32, help="training and evaluation crop (default 32)")
    p.add_argument(
        "--resize-size",
        type=int,
        default=None,
        help="evaluation resize of the short side (default: the crop at <= 64 px, else x 256/224)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size; the lr is scaled to it (default 64)")
    p.add_argument("--out", default=None, help="output folder (default outputs/experiments/<table>)")
    p.add_argument("--threads", type=int, default=1, help="torch compute threads (default 1)")
    p.add_argument("--num-workers", type=int, default=1, help="data loader workers per run (default 1)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default auto)")
    return p


def _errors() -> tuple:
    from .classification.errors import ClassificationError
    from .models import InvalidConfigError, UnknownModelError

    errs: List[type] = [ClassificationError, InvalidConfigError, UnknownModelError]
    try:
        from .errors import ShuffleNetError

        errs.append(ShuffleNetError)
    except ImportError:  # pragma: no cover - older layout
        pass
    return tuple(errs)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status (2 with one ``error: ...`` line for bad input)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    from .classification.ablations import TABLES, Experiment, run_table

    if args.table not in TABLES:
        print(f"error: unknown table {args.table!r}; choose one of {', '.join(TABLES)}", file=sys.stderr, flush=True)
        return 2
    exp = Experiment(
        table=args.table,
        data_root=args.data_root,
        steps=args.steps,
        seeds=args.seeds,
        rows=args.rows,
        widths=args.width,
        image_size=args.image_size,
        resize_size=args.resize_size,
        batch_size=args.batch_size,
        out=args.out,
        threads=args.threads,
        num_workers=args.num_workers,
        accelerator=args.accelerator,
        print_fn=lambda line: print(line, flush=True),
    )
    try:
        run_table(exp)
    except _errors() as e:
        text = str(e)
        print(f"error: {' '.join(text.split()) if len(text) < 400 else text}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
