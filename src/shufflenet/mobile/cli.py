"""``mobile/export.py`` / ``shufflenet-export``: export a model to verified mobile files, each with a sidecar.

    python mobile/export.py shufflenet_v1_x0_5_g3 --input-size 224 480x640 --out exported/
    python mobile/export.py model.pth --format pte --input-size 224
    python mobile/export.py model.pth --format onnx ncnn ptl     # several runtimes at once
    python mobile/export.py model.pth --format tflite --quantize int8   # LiteRT full-integer int8
    python mobile/export.py model.pth --camera-input          # uint8 NHWC frames in, normalization folded in
    python mobile/export.py --detector demo_shapes --input-size 96x128

Top of the wing: parses arguments and calls :mod:`.ptl`, :mod:`.pte`, :mod:`.onnx_export`, :mod:`.ncnn_export`,
:mod:`.tflite_export`, :mod:`.detector` and :mod:`.quantize`.
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

__all__ = ["FORMATS", "build_parser", "main", "cli"]

FORMATS = ("ptl", "pte", "onnx", "ncnn", "tflite")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mobile/export.py",
        description="Export a model to verified mobile files (.ptl lite interpreter, .pte ExecuTorch, ONNX, ncnn, "
        "LiteRT .tflite), "
        "each with a JSON sidecar.",
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
        "--format",
        nargs="+",
        choices=FORMATS,
        default=["ptl"],
        help="one or more of: ptl (lite interpreter), pte (ExecuTorch + XNNPACK), onnx (ONNX Runtime; extra "
        "'onnx'), ncnn (pnnx + ncnn; extra 'ncnn'), tflite (LiteRT, NHWC input; extra 'litert') (default: ptl)",
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
        help="int8 post-training static quantization calibrated on --calib-images (ptl: FX/QNNPACK; "
        "pte: PT2E/XNNPACKQuantizer; onnx: ONNX Runtime QDQ; ncnn: ncnn2table + ncnn2int8, which must be on PATH; "
        "tflite: full integer, PT2E/litert-torch)",
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
    formats = list(dict.fromkeys(args.format))  # each once, in the order given
    sizes = [parse_size(s) for s in args.input_size]
    if (args.model is None) == (args.detector is None):
        raise MobileError("give either a MODEL (name, weights file or checkpoint) or --detector CONFIG")
    if args.n_real < 0:
        raise MobileError(f"--n-real must be >= 0, got {args.n_real}")
    images = resolve_images(args.images)
    _require_runtimes(formats)
    if args.detector is not None:
        return _export_detector(args, formats, sizes, images)
    int8 = args.quantize == "int8"
    if int8 and args.camera_input:
        raise MobileError("--camera-input is for fp32 exports (not with --quantize int8)")
    if args.bytecode_version is not None and formats != ["ptl"]:
        raise MobileError("--bytecode-version applies to .ptl files only (give --format ptl alone)")
    if "tflite" in formats and args.camera_input:
        raise MobileError("--format tflite takes float32 NHWC tensors (1 x H x W x 3, normalized; no --camera-input)")
    if "ncnn" in formats and args.camera_input:
        raise MobileError(
            "--format ncnn exports NCHW files (an app feeds pixels through ncnn::Mat::from_pixels + "
            "substract_mean_normalize); no --camera-input"
        )
    if "ncnn" in formats and int8:
        from .ncnn_export import require_ncnn_int8_tools

        require_ncnn_int8_tools()
    source = load_model(args.model, arch=args.arch, num_classes=args.num_classes)
    atol = args.atol if args.atol is not None else (INT8_ATOL if int8 else DEFAULT_ATOL)
    rtol = args.rtol if args.rtol is not None else (INT8_RTOL if int8 else DEFAULT_RTOL)
    stem = args.name or (source.name + ("_int8" if int8 else "") + ("_camera" if args.camera_input else ""))
    calib_size = parse_size(args.calib_size) if args.calib_size else sizes[0]
    out = writable_dir(args.out)
    common = dict(images=images, n_real=args.n_real, atol=atol, rtol=rtol, basename=stem)
    for fmt in formats:
        if fmt == "pte":
            from .pte import export_pte

            quantize_fn = None
            if int8:
                from .quantize import pt2e_int8_for_pte

                quantize_fn = pt2e_int8_for_pte(source, args.calib_images, args.calib_count, calib_size)
            export_pte(
                source,
                out,
                sizes,
                quantize_fn=quantize_fn,
                memory_format=args.memory_format or "auto",
                rewrite=args.rewrite,
                camera=args.camera_input,
                **common,
            )
        elif fmt == "onnx":
            from .onnx_export import export_onnx

            quantize_fn = None
            if int8:
                from .quantize import ort_int8_for_onnx

                quantize_fn = ort_int8_for_onnx(source, args.calib_images, args.calib_count, calib_size)
            export_onnx(
                source, out, sizes, rewrite=args.rewrite, camera=args.camera_input, quantize_fn=quantize_fn, **common
            )
        elif fmt == "ncnn":
            from .ncnn_export import export_ncnn

            int8_fn = None
            if int8:
                from .quantize import ncnn_int8_for_ncnn

                int8_fn = ncnn_int8_for_ncnn(source, args.calib_images, args.calib_count, calib_size)
            export_ncnn(source, out, sizes, rewrite=args.rewrite, quantize_fn=int8_fn, **common)
        elif fmt == "tflite":
            from .tflite_export import export_tflite, tflite_int8

            quantize_fn = tflite_int8(source, args.calib_images, args.calib_count, calib_size) if int8 else None
            export_tflite(source, out, sizes, rewrite=args.rewrite, quantize_fn=quantize_fn, **common)
        else:
            _export_ptl(args, source, out, sizes, calib_size, common)
    return 0


def _require_runtimes(formats: Sequence[str]) -> None:
    """Every asked-for runtime importable, checked before any work (one error line naming the extra)."""
    for fmt in formats:
        if fmt == "ptl":
            from .ptl import require_xnnpack

            require_xnnpack()
        elif fmt == "pte":
            from .pte import _require_executorch

            _require_executorch()
        elif fmt == "onnx":
            from .onnx_export import require_onnx

            require_onnx()
        elif fmt == "ncnn":
            from .ncnn_export import require_ncnn

            require_ncnn()
        elif fmt == "tflite":
            from .tflite_export import require_litert

            require_litert()


def _export_ptl(args, source, out, sizes, calib_size, common) -> None:
    from .ptl import export_ptl

    engine = None
    if args.quantize == "int8":
        from .quantize import quantize_fx_int8, resolve_calib_dir

        calib = resolve_calib_dir(args.calib_images)
        source = quantize_fx_int8(source, calib, args.calib_count, calib_size)
        engine = "qnnpack"
    export_ptl(
        source,
        out,
        sizes,
        method=args.method,
        channels_last=args.memory_format != "contiguous",
        bytecode_version=args.bytecode_version,
        quantized_engine=engine,
        rewrite=args.rewrite,
        camera=args.camera_input,
        **common,
    )


def _export_detector(args, formats, sizes, images) -> int:
    if set(formats) - {"ptl", "onnx"} or args.quantize != "none" or args.camera_input:
        raise MobileError(
            "--detector exports fp32 .ptl and ONNX files (--format ptl onnx; no pte / ncnn / tflite / "
            "--quantize int8 / --camera-input)"
        )
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
        formats=formats,
    )
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-export`` and ``mobile/export.py``: :func:`main` through :func:`run_cli`."""
    return run_cli(main, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(cli())
