"""``mobile/export.py`` / ``shufflenet-export``: export a model to a verified ``.ptl`` or ``.pte`` with a sidecar.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/
    python mobile/export.py model.pth --format pte --input-size 224
    python mobile/export.py model.pth --camera-input          # uint8 NHWC frames in, normalization folded in
    python mobile/export.py --detector demo_shapes --input-size 96x128

Top of the wing: parses arguments and calls :mod:`.ptl`, :mod:`.pte`, :mod:`.detector` and :mod:`.quantize`.
Bad input (unknown model, bad size, missing file, an ``--out`` that is a file or cannot be written, no real
images in ``--images``) is one ``error:`` line and exit status 2, checked before any export work.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ..errors import run_cli
from .images import parse_size, resolve_images
from .source import MobileError, load_model, writable_dir
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, INT8_ATOL, INT8_RTOL

__all__ = ["build_parser", "main", "cli"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mobile/export.py",
        description="Export a model to a verified .ptl (PyTorch lite interpreter) or .pte (ExecuTorch) with a JSON sidecar.",
    )
    p.add_argument(
        "model",
        nargs="?",
        help="registered name (e.g. shufflenet_v1_x0_5_g3), package weights file, or Lightning .ckpt",
    )
    p.add_argument(
        "--detector",
        default=None,
        metavar="CONFIG",
        help="export a detector instead: a config name in configs/detection/ or a path (see --weights)",
    )
    p.add_argument("--weights", default=None, help="detector weights (with --detector; default: random init)")
    p.add_argument(
        "--input-size",
        nargs="+",
        default=["224"],
        metavar="S|HxW",
        help="sizes to verify at (height x width), e.g. 224 480x640 720x1280 (default 224)",
    )
    p.add_argument("--out", default="exported", help="output folder (default: exported/)")
    p.add_argument("--name", default=None, help="file stem (default: the model name, + _int8 when quantized)")
    p.add_argument(
        "--format", choices=("ptl", "pte"), default="ptl", help="ptl: lite interpreter; pte: ExecuTorch + XNNPACK"
    )
    p.add_argument("--arch", default=None, help="architecture name for a checkpoint that does not store one")
    p.add_argument(
        "--num-classes", type=int, default=None, help="classifier width for a registered name (default: its own)"
    )
    p.add_argument(
        "--memory-format",
        choices=("channels_last", "contiguous"),
        default=None,
        help="layout the exported model computes in / the .pte takes (default: channels_last, XNNPACK's NHWC; "
        "for a .pte only when XNNPACK takes the whole program)",
    )
    p.add_argument(
        "--no-rewrite",
        dest="rewrite",
        action="store_false",
        help="convert the backbone as written instead of its runtime-specific equivalent form (slower)",
    )
    p.add_argument(
        "--camera-input",
        action="store_true",
        help="the file takes uint8 N x H x W x 3 RGB frames; mean/std folded into the stem (exact at the border)",
    )
    p.add_argument(
        "--method",
        choices=("auto", "script", "trace"),
        default="auto",
        help="TorchScript conversion (default: script, trace if scripting fails)",
    )
    p.add_argument(
        "--images",
        default="auto",
        help="real images for verification: 'auto' (the package's sample photos), a folder, or 'none' (random only)",
    )
    p.add_argument("--n-real", type=int, default=2, help="real images per size (default 2)")
    p.add_argument(
        "--atol", type=float, default=None, help=f"absolute bound (default {DEFAULT_ATOL:g}; int8: {INT8_ATOL:g})"
    )
    p.add_argument(
        "--rtol",
        type=float,
        default=None,
        help=f"times max|eager output| added to --atol (default {DEFAULT_RTOL:g}; int8: {INT8_RTOL:g})",
    )
    p.add_argument(
        "--bytecode-version",
        type=int,
        default=None,
        help="backport the .ptl to this bytecode version (e.g. 7 for older Android runtimes)",
    )
    p.add_argument(
        "--quantize",
        choices=("none", "int8"),
        default="none",
        help="int8 post-training static quantization calibrated on --calib-images (ptl: FX/QNNPACK; pte: PT2E/XNNPACKQuantizer)",
    )
    p.add_argument(
        "--calib-images",
        default="auto",
        help="folder of real calibration images (default: the package's sample photos)",
    )
    p.add_argument(
        "--calib-count", type=int, default=64, help="calibration images (default 64, or as many as the folder has)"
    )
    p.add_argument(
        "--calib-size", default=None, metavar="S|HxW", help="calibration resolution (default: the first --input-size)"
    )
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = [parse_size(s) for s in args.input_size]
    if (args.model is None) == (args.detector is None):
        raise MobileError("give either a MODEL (name, weights file or checkpoint) or --detector CONFIG")
    if args.n_real < 0:
        raise MobileError(f"--n-real must be >= 0, got {args.n_real}")
    images = resolve_images(args.images)
    if args.detector is not None:
        if args.format != "ptl" or args.quantize != "none" or args.camera_input:
            raise MobileError("--detector exports fp32 .ptl only (no --format pte / --quantize int8 / --camera-input)")
        from .detector import export_detector

        out = writable_dir(args.out)
        export_detector(
            args.detector,
            out,
            sizes,
            weights=args.weights,
            images=images,
            n_real=args.n_real,
            atol=args.atol or DEFAULT_ATOL,
            rtol=args.rtol or DEFAULT_RTOL,
            bytecode_version=args.bytecode_version,
            basename=args.name,
        )
        return 0
    int8 = args.quantize == "int8"
    if int8 and args.camera_input:
        raise MobileError("--camera-input is for fp32 exports (not with --quantize int8)")
    if args.format == "pte" and args.bytecode_version is not None:
        raise MobileError("--bytecode-version applies to .ptl files only (ExecuTorch has no bytecode backport)")
    source = load_model(args.model, arch=args.arch, num_classes=args.num_classes)
    atol = args.atol if args.atol is not None else (INT8_ATOL if int8 else DEFAULT_ATOL)
    rtol = args.rtol if args.rtol is not None else (INT8_RTOL if int8 else DEFAULT_RTOL)
    stem = args.name or (source.name + ("_int8" if int8 else "") + ("_camera" if args.camera_input else ""))
    calib_size = parse_size(args.calib_size) if args.calib_size else sizes[0]
    if args.format == "pte":
        from .pte import _require_executorch, export_pte

        _require_executorch()
        quantize_fn = None
        if int8:
            from .quantize import pt2e_int8_for_pte

            quantize_fn = pt2e_int8_for_pte(source, args.calib_images, args.calib_count, calib_size)
        out = writable_dir(args.out)
        export_pte(
            source,
            out,
            sizes,
            images=images,
            n_real=args.n_real,
            atol=atol,
            rtol=rtol,
            basename=stem,
            quantize_fn=quantize_fn,
            memory_format=args.memory_format or "auto",
            rewrite=args.rewrite,
            camera=args.camera_input,
        )
        return 0
    from .ptl import export_ptl, require_xnnpack

    require_xnnpack()
    engine = None
    if int8:
        from .quantize import quantize_fx_int8, resolve_calib_dir

        calib = resolve_calib_dir(args.calib_images)
        source = quantize_fx_int8(source, calib, args.calib_count, calib_size)
        engine = "qnnpack"
    out = writable_dir(args.out)
    export_ptl(
        source,
        out,
        sizes,
        method=args.method,
        images=images,
        n_real=args.n_real,
        channels_last=args.memory_format != "contiguous",
        atol=atol,
        rtol=rtol,
        bytecode_version=args.bytecode_version,
        basename=stem,
        quantized_engine=engine,
        rewrite=args.rewrite,
        camera=args.camera_input,
    )
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-export`` and ``mobile/export.py``: :func:`main` through :func:`run_cli`."""
    return run_cli(main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
