"""Complexity as the paper counts it: multiply-adds of convolutions and fully connected layers.

    python -m shufflenet.complexity                        # every registered model + every paper entry
    python -m shufflenet.complexity --models 'shufflenet_v1_x1_0_*' --json out.json
    python -m shufflenet.complexity --markdown             # the README / docs model-zoo table
    python -m shufflenet.complexity --fit-skeleton resnet 38   # Table-4 width search

Counting: fvcore's :class:`~fvcore.nn.FlopCountAnalysis` (one multiply-add = one "flop") on a
1x3x224x224 input, keeping only the conv / linear / matmul operators (BN, pooling, ReLU, channel
shuffle, the SE sigmoid are free, as in the paper). Params are all parameters (BN included).

Paper entries: every ShuffleNet (and MobileNet, AlexNet, Table-4 baseline) entry of Tables 1, 2, 4, 5,
6 and 8 in ``paper_tables.json`` is mapped to its registered name. Per-model figures (Tables 1, 5, 6, 8)
must be within 3 %, the per-row figures of Tables 2 and 4 (which the paper matched only "roughly")
within 5 %. A ShuffleNet entry that maps to no registered model is an error, never silently skipped.
The command exits with status 1 if an entry is out of its bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import ShuffleNetError, run_cli
from .fileio import write_json_atomic
from .models import create_model, get_spec, list_models
from .models import paper_entries as registry_paper_entries

__all__ = [
    "COUNTED_OPS",
    "PER_MODEL_TOLERANCE_PCT",
    "ROW_TOLERANCE_PCT",
    "count_macs",
    "count_params",
    "measure",
    "paper_entries",
    "complexity_report",
    "model_zoo",
    "zoo_markdown",
    "fit_skeleton_widths",
    "main",
    "cli",
]

#: fvcore operator names that are multiply-adds in the paper's sense (conv + FC).
COUNTED_OPS = frozenset({"conv", "linear", "matmul", "addmm", "bmm", "einsum"})
PER_MODEL_TOLERANCE_PCT = 3.0  # Tables 1, 5, 6, 8: one figure per model
ROW_TOLERANCE_PCT = 5.0  # Tables 2, 4: one figure per row ("roughly" matched by the paper)
INPUT_SIZE = (224, 224)


# --- counting ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    # Batch-1 forward passes of small nets are ~50x slower with an intra-op thread pool on a busy
    # 2-core machine than on one thread; the count does not depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def count_macs(model: nn.Module, input_size: Tuple[int, int] = INPUT_SIZE) -> int:
    """Multiply-adds of the conv / linear / matmul operators of one forward pass (batch 1, 3 channels)."""
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    try:
        with _one_thread(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings of third-party models
            analysis = FlopCountAnalysis(model, torch.zeros(1, 3, *input_size))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            by_op = analysis.by_operator()
    finally:
        model.train(was_training)
    return int(sum(v for op, v in by_op.items() if op in COUNTED_OPS))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _widths(model: nn.Module) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if hasattr(model, "stem_channels") and hasattr(model, "stage_out_channels"):
        out["stem_channels"] = int(model.stem_channels)
        out["stage_out_channels"] = [int(c) for c in model.stage_out_channels]
    if hasattr(model, "mid_channels") and isinstance(model.mid_channels, (tuple, list)):
        out["mid_channels"] = [int(c) for c in model.mid_channels]
    return out


@cache
def _measure_cached(name: str) -> Dict[str, Any]:
    spec = get_spec(name)
    model = create_model(name)
    macs = count_macs(model)
    row: Dict[str, Any] = dict(
        name=name,
        family=spec.family,
        groups=spec.kwargs.get("groups"),
        width_mult=spec.kwargs.get("width_mult"),
        mflops=round(macs / 1e6, 3),
        params_m=round(count_params(model) / 1e6, 4),
        **_widths(model),
        paper_mflops=spec.paper_mflops,
        paper_err=spec.paper_err,
        description=spec.description,
    )
    row["diff_pct"] = _diff_pct(row["mflops"], spec.paper_mflops)
    return row


def measure(name: str) -> Dict[str, Any]:
    """MFLOPs (multiply-adds / 1e6), params (M), widths and the paper's figures for a registered model."""
    return dict(_measure_cached(name))


def _diff_pct(measured: float, paper: Optional[float]) -> Optional[float]:
    return None if paper is None else round(100.0 * (measured - paper) / paper, 2)


# --- paper entries -----------------------------------------------------------------------------------
#: Tables whose MFLOPs the report checks, and the bound of each (Table 3 gives no MFLOPs of its own).
TABLE_TOLERANCE_PCT = {
    "1": PER_MODEL_TOLERANCE_PCT,
    "2": ROW_TOLERANCE_PCT,
    "4": ROW_TOLERANCE_PCT,
    "5": PER_MODEL_TOLERANCE_PCT,
    "6": PER_MODEL_TOLERANCE_PCT,
    "8": PER_MODEL_TOLERANCE_PCT,
}


def paper_entries() -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
    """(entries of registered models, entries of models the project does not build), from the paper's figures the
    registry holds (:func:`shufflenet.models.paper_entries`), Tables 1, 2, 4, 5, 6 and 8.

    Each entry: ``table``, ``label`` (the paper's words), ``name``, ``paper_mflops``, ``tolerance_pct``. A
    ShuffleNet or Table-4 entry whose name is not registered is an error, never silently skipped.
    """
    registered = set(list_models())
    mapped, unmapped = [], []
    for e in registry_paper_entries():
        if e.table not in TABLE_TOLERANCE_PCT or e.mflops is None:
            continue
        if e.name is not None and e.name not in registered:
            if e.name.startswith(("shufflenet", "skeleton")):
                raise ShuffleNetError(
                    f"paper entry {e.label!r} (Table {e.table}) maps to {e.name!r}, which is not a registered model"
                )
            name = None
        else:
            name = e.name
        entry = dict(
            table=e.table,
            label=e.label,
            name=name,
            paper_mflops=float(e.mflops),
            tolerance_pct=TABLE_TOLERANCE_PCT[e.table],
        )
        (mapped if name else unmapped).append(entry)
    return mapped, unmapped


# --- reports -----------------------------------------------------------------------------------------
def _progress(names: Sequence[str]) -> Iterator[str]:
    tty = sys.stderr.isatty()
    print(f"measuring {len(names)} models (conv+FC multiply-adds, fvcore, 1x3x224x224) ...", file=sys.stderr)
    for i, name in enumerate(names, 1):
        if tty:
            print(f"\r  [{i}/{len(names)}] {name:<40}", end="", file=sys.stderr, flush=True)
        yield name
    if tty:
        print(file=sys.stderr)


def complexity_report(pattern: str = "*", progress: bool = False) -> Dict[str, Any]:
    """Measured complexity of the registered models matching ``pattern`` and of the paper entries
    mapped to them. ``all_within_bounds`` is True when every such entry is inside its tolerance."""
    names = list_models(pattern)
    if not names:
        raise ShuffleNetError(f"no registered model matches {pattern!r}; valid names: {', '.join(list_models())}")
    entries, unmapped = paper_entries()
    entries = [e for e in entries if e["name"] in names]
    models = [measure(n) for n in (_progress(names) if progress else names)]
    for e in entries:
        m = measure(e["name"])
        e.update(mflops=m["mflops"], params_m=m["params_m"], diff_pct=_diff_pct(m["mflops"], e["paper_mflops"]))
        e["within_bound"] = abs(e["diff_pct"]) <= e["tolerance_pct"]
    return dict(
        settings=dict(
            counter="fvcore.nn.FlopCountAnalysis",
            counted_ops=sorted(COUNTED_OPS),
            input="1x3x224x224",
            unit="MFLOPs = 1e6 multiply-adds",
            tolerance_pct={
                "per-model (Tables 1, 5, 6, 8)": PER_MODEL_TOLERANCE_PCT,
                "per-row (Tables 2, 4)": ROW_TOLERANCE_PCT,
            },
        ),
        models=models,
        paper_entries=entries,
        not_registered=unmapped,
        all_within_bounds=all(e["within_bound"] for e in entries),
    )


def _fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return "-"
    return format(v, spec) if spec else str(v)


def _widths_text(m: Dict[str, Any]) -> str:
    if "stage_out_channels" not in m:
        return "-"
    return f"{m['stem_channels']} | " + "-".join(map(str, m["stage_out_channels"]))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def format_report(report: Dict[str, Any]) -> str:
    out = []
    rows = [
        [
            e["table"],
            e["label"],
            e["name"],
            _fmt(e["paper_mflops"], "g"),
            _fmt(e["mflops"], ".1f"),
            _fmt(e["diff_pct"], "+.1f"),
            f"{e['tolerance_pct']:g}",
            _fmt(e["params_m"], ".2f"),
            "ok" if e["within_bound"] else "OUT",
        ]
        for e in report["paper_entries"]
    ]
    out.append("Paper entries (Tables 1, 2, 4, 5, 6, 8) vs measured conv+FC multiply-adds at 224x224")
    out.append(
        _table(
            ["table", "paper model", "name", "paper MFLOPs", "MFLOPs", "diff %", "bound %", "params M", ""],
            rows,
            [False, False, False, True, True, True, True, True, False],
        )
    )
    if report["not_registered"]:
        out.append(
            "not built by this project: "
            + ", ".join(f"{e['label']} (Table {e['table']}, {e['paper_mflops']:g})" for e in report["not_registered"])
        )
    out.append("")
    out.append("Registered models")
    rows = [
        [
            m["name"],
            _fmt(m["groups"]),
            _fmt(m["width_mult"], "g"),
            _widths_text(m),
            f"{m['mflops']:.1f}",
            f"{m['params_m']:.2f}",
            _fmt(m["paper_mflops"], "g"),
            _fmt(m["diff_pct"], "+.1f"),
            _fmt(m["paper_err"]),
        ]
        for m in report["models"]
    ]
    out.append(
        _table(
            [
                "name",
                "g",
                "width",
                "stem | stage widths",
                "MFLOPs",
                "params M",
                "paper MFLOPs",
                "diff %",
                "paper err %",
            ],
            rows,
            [False, True, True, False, True, True, True, True, True],
        )
    )
    n_out = sum(not e["within_bound"] for e in report["paper_entries"])
    out.append("")
    out.append(
        f"{len(report['paper_entries'])} paper entries compared, "
        + ("all within bounds" if n_out == 0 else f"{n_out} OUT OF BOUNDS")
    )
    return "\n".join(out)


def model_zoo(pattern: str = "*") -> List[Dict[str, Any]]:
    """One row per registered model for the model-zoo table (name, g, width, widths, MFLOPs, params, err)."""
    names = list_models(pattern)
    if not names:
        raise ShuffleNetError(f"no registered model matches {pattern!r}; valid names: {', '.join(list_models())}")
    return [measure(n) for n in names]


def zoo_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    lines = [
        "| name | g | width | stem \\| stage widths | MFLOPs | params (M) | paper MFLOPs | paper top-1 err (%) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for m in rows:
        lines.append(
            f"| `{m['name']}` | {_fmt(m['groups'])} | {_fmt(m['width_mult'], 'g')} | "
            f"{_widths_text(m).replace('|', chr(92) + '|')} | {m['mflops']:.1f} | {m['params_m']:.2f} | "
            f"{_fmt(m['paper_mflops'], 'g')} | {_fmt(m['paper_err'])} |"
        )
    return "\n".join(lines)


# --- Table-4 width search ----------------------------------------------------------------------------
def fit_skeleton_widths(unit: str, target_mflops: float, stem: Optional[int] = None) -> Dict[str, Any]:
    """The 1:2:4 stage widths (multiples of 4 for ResNet's 1:4 bottleneck) whose skeleton is closest to
    ``target_mflops``; stem 24 at >= 100 MFLOPs, else 12 (the ShuffleNet rule at that complexity)."""
    from .models.baselines import SKELETON_UNITS, skeleton

    if unit not in SKELETON_UNITS:
        raise ShuffleNetError(
            f"unknown skeleton unit {unit!r}; valid: {', '.join(SKELETON_UNITS)} "
            f"(Xception-like is ShuffleNet g=1, no search needed)"
        )
    stem = stem if stem is not None else (24 if target_mflops >= 100 else 12)
    # Stage widths (c, 2c, 4c); ResNet's 1:4 bottleneck needs every width divisible by 4. Any c otherwise:
    # ResNeXt's bottleneck is rounded to its 16 groups, so its complexity moves in uneven steps with c.
    step = 4 if unit == "resnet" else 1
    best: Optional[Dict[str, Any]] = None
    c2 = step
    while True:
        widths = [c2, 2 * c2, 4 * c2]
        mflops = count_macs(skeleton(unit, widths, stem)) / 1e6
        cand = dict(
            unit=unit,
            stem_channels=stem,
            stage_out_channels=widths,
            mflops=round(mflops, 3),
            diff_pct=_diff_pct(mflops, target_mflops),
        )
        if best is None or abs(cand["diff_pct"]) < abs(best["diff_pct"]):
            best = cand
        if mflops > target_mflops:
            return best
        c2 += step


# --- command line ------------------------------------------------------------------------------------
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shufflenet.complexity",
        description="Multiply-adds (conv + FC, as the paper counts) and params of the registered models, "
        "compared with the paper's tables.",
    )
    parser.add_argument("--models", default="*", metavar="PATTERN", help="glob over registered names (default: all)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--markdown", action="store_true", help="print the model-zoo table in Markdown only")
    parser.add_argument(
        "--fit-skeleton",
        nargs=2,
        metavar=("UNIT", "MFLOPS"),
        help="search Table-4 stage widths for UNIT (vgg, resnet, resnext) at MFLOPS",
    )
    args = parser.parse_args(argv)

    def write_json(obj: Any) -> None:
        try:
            write_json_atomic(obj, args.json)
        except OSError as e:
            raise ShuffleNetError(f"--json {args.json}: cannot write ({e.strerror or e})") from None

    if args.fit_skeleton:
        unit, target = args.fit_skeleton
        try:
            target_f = float(target)
        except ValueError:
            raise ShuffleNetError(f"--fit-skeleton MFLOPS must be a number, got {target!r}") from None
        best = fit_skeleton_widths(unit, target_f)
        print(json.dumps(best))
        if args.json:
            write_json(best)
        return 0
    if args.markdown:
        rows = model_zoo(args.models)
        print(zoo_markdown(rows))
        if args.json:
            write_json(rows)
        return 0
    report = complexity_report(args.models, progress=True)
    print(format_report(report))
    if args.json:
        write_json(report)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if report["all_within_bounds"] else 1


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-flops``: :func:`main` with the project's one-line errors."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
