"""``mobile/export.py`` / ``shufflenet-export``: export a model to verified mobile files, each with a sidecar.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/
    python mobile/export.py model.pth --format onnx ncnn ptl --quantize int8
    python mobile/export.py --detector demo_shapes --input-size 96x128

Invalid combinations are refused before anything is imported (the same answer with or without a runtime
installed); bad input is one ``error:`` line and exit status 2, before any export work.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Optional, Sequence

from ..errors import run_cli
from .images import parse_size, resolve_images
from .runtime import Calibration, ExportSpec, check, export, invalid, runtimes
from .source import MobileError, load_model, writable_dir
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, INT8_ATOL, INT8_RTOL

__all__ = ["build_parser", "main", "cli"]


def build_parser() -> argparse.ArgumentParser:
    known = runtimes()
    p = argparse.ArgumentParser(description="Export a model to verified mobile files, each with a JSON sidecar.")
    add = p.add_argument
    add("model", nargs="?", help="registered name, package weights file, or Lightning .ckpt")
    add("--detector", default=None, metavar="CONFIG", help="export a detector: a configs/detection/ name or path")
    add("--weights", default=None, help="detector weights (with --detector; default: random init)")
    add("--input-size", nargs="+", default=["224"], metavar="S|HxW", help="sizes to verify at (default 224)")
    add("--out", default="exported", help="output folder (default: exported/)")
    add("--name", default=None, help="file stem (default: the model name, + _int8 when quantized)")
    add(
        "--format",
        nargs="+",
        choices=list(known),
        default=["ptl"],
        help="; ".join(f"{n}: {r.summary}" for n, r in known.items()) + " (default ptl, deprecated upstream: "
        "choose pte, its successor, for new apps)",
    )
    add("--arch", default=None, help="architecture name for a checkpoint that does not store one")
    add("--num-classes", type=int, default=None, help="classifier width for a registered name")
    add("--memory-format", choices=("channels_last", "contiguous"), default=None, help="layout (default NHWC)")
    add("--no-rewrite", dest="rewrite", action="store_false", help="convert the backbone as written (slower)")
    add("--camera-input", action="store_true", help="take uint8 N x H x W x 3 RGB frames (mean/std folded in)")
    add("--method", choices=("auto", "script", "trace"), default="auto", help="TorchScript conversion (.ptl)")
    add("--images", default="auto", help="verification images: auto (sample photos), a folder, or none")
    add("--n-real", type=int, default=2, help="real images per size (default 2)")
    add("--atol", type=float, default=None, help=f"absolute bound (default {DEFAULT_ATOL:g}; int8: {INT8_ATOL:g})")
    add("--rtol", type=float, default=None, help=f"bound per max|eager| ({DEFAULT_RTOL:g}; int8: {INT8_RTOL:g})")
    add("--bytecode-version", type=int, default=None, help="backport the .ptl to this bytecode version")
    schemes = "; ".join(f"{n}: {r.int8}" for n, r in known.items() if r.int8)
    add("--quantize", choices=("none", "int8"), default="none", help=f"int8 post-training static ({schemes})")
    add("--calib-images", default="auto", help="calibration images folder (default: the sample photos)")
    add("--calib-count", type=int, default=64, help="calibration images (default 64)")
    add("--calib-size", default=None, metavar="S|HxW", help="calibration size (default: the first --input-size)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    formats = list(dict.fromkeys(args.format))  # each once, in the order given
    sizes = [parse_size(s) for s in args.input_size]
    if (args.model is None) == (args.detector is None):
        raise MobileError("give either a MODEL (name, weights file or checkpoint) or --detector CONFIG")
    if args.n_real < 0:
        raise MobileError(f"--n-real must be >= 0, got {args.n_real}")
    int8 = args.quantize == "int8"
    spec = ExportSpec(
        sizes=sizes,
        images=args.images,
        n_real=args.n_real,
        atol=args.atol,
        rtol=args.rtol,
        name=args.name,
        rewrite=args.rewrite,
        camera=args.camera_input,
        memory_format=args.memory_format,
        method=args.method,
        bytecode_version=args.bytecode_version,
        int8=Calibration(args.calib_images, args.calib_count, parse_size(args.calib_size) if args.calib_size else None)
        if int8
        else None,
    )
    known = runtimes()
    task = "classification" if args.detector is None else "detection"
    if task == "detection" and (int8 or args.camera_input or any(not known[f].detector for f in formats)):
        can = [n for n, r in known.items() if r.detector]
        cannot = [n for n, r in known.items() if not r.detector]
        raise MobileError(
            f"--detector exports fp32 {' and '.join(can)} files (--format {' '.join(can)}; no "
            f"{' / '.join(cannot)} / --quantize int8 / --camera-input)"
        )
    for fmt in formats:  # arguments first, then what is installed: the same answer on every machine
        why = invalid(known[fmt], spec, task)
        if why:
            raise MobileError(why)
    spec = replace(spec, images=resolve_images(spec.images))
    check([known[f] for f in formats], spec, task)
    if args.detector is not None:
        from .detector import export_detector

        export_detector(args.detector, writable_dir(args.out), formats, spec, weights=args.weights)
        return 0
    source = load_model(args.model, arch=args.arch, num_classes=args.num_classes)
    if spec.name is None:
        spec = replace(spec, name=source.name + ("_int8" if int8 else "") + ("_camera" if args.camera_input else ""))
    out = writable_dir(args.out)
    for fmt in formats:
        export(known[fmt], source, out, spec)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-export`` and ``mobile/export.py``: :func:`main` through :func:`run_cli`."""
    return run_cli(main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
