"""Training and evaluation: detectron2's ``DefaultTrainer`` with the wing's checkpointer and COCO evaluation.

``detection/train_net.py`` is a thin wrapper around :func:`main` here, which follows detectron2's own
``tools/train_net.py``: ``default_argument_parser`` flags, ``launch`` over processes, ``default_setup``,
``Trainer.test`` for ``--eval-only`` and ``trainer.resume_or_load`` + ``trainer.train()`` otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, build_detection_train_loader
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .. import InvalidConfigError, UnknownModelError, WeightsError
from ..fileio import write_json_atomic
from .checkpoint import ShuffleNetCheckpointer
from .compat import HAS_COMPILED_OPS, MissingCompiledOpError
from .config import DetectionError, get_detection_cfg, list_configs
from .data import check_trainable, prepare_datasets, register_coco

__all__ = [
    "Trainer",
    "COCO_METRICS",
    "build_argument_parser",
    "setup",
    "run",
    "main",
    "write_results",
    "format_results_table",
]

logger = logging.getLogger(__name__)

#: The summary metrics of COCO box evaluation, in pycocotools' order.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose checkpointer also reads this project's classification checkpoints and
    whose evaluator is ``COCOEvaluator`` (pycocotools; detectron2's fast C++ version when compiled)."""

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        # Same arguments as DefaultTrainer's DetectionCheckpointer; the hooks only save through it.
        self.checkpointer = ShuffleNetCheckpointer(self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        for hook in self._hooks:
            if hasattr(hook, "checkpointer"):
                hook.checkpointer = self.checkpointer

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """detectron2's train loader, over dataset dicts checked for at least one usable box."""
        if cfg.MODEL.LOAD_PROPOSALS or cfg.MODEL.KEYPOINT_ON:
            return build_detection_train_loader(cfg)
        dicts = []
        for name in cfg.DATASETS.TRAIN:  # each set loaded once, as get_detection_dataset_dicts would
            one = DatasetCatalog.get(name)
            check_trainable(name, one)
            dicts.extend(one)
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            dicts = filter_images_with_only_crowd_annotations(dicts)
        return build_detection_train_loader(cfg, dataset=dicts)

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_folder, use_fast_impl=HAS_COMPILED_OPS)


def build_argument_parser():
    """detectron2's ``default_argument_parser`` plus ``--config`` and ``--register-coco``."""
    parser = default_argument_parser(
        epilog=(
            "Examples:\n"
            "  python detection/train_net.py --config coco_shufflenet2x.yaml MODEL.WEIGHTS model.pth\n"
            "  python detection/train_net.py --config coco_shufflenet1x_300 --eval-only MODEL.WEIGHTS "
            "outputs/detection/coco_shufflenet1x_300/model_final.pth\n"
            "  python detection/train_net.py --config demo_shapes\n"
            f"Configs in configs/detection: {', '.join(list_configs())}"
        )
    )
    parser.add_argument(
        "--config",
        default="",
        metavar="NAME",
        help="a config name in configs/detection (e.g. coco_shufflenet2x.yaml); --config-file takes a path",
    )
    parser.add_argument(
        "--register-coco",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "JSON", "IMAGE_DIR"),
        help="register a COCO-format dataset (instances json + image folder) under NAME; use NAME in "
        "DATASETS.TRAIN / DATASETS.TEST. May be repeated.",
    )
    parser.add_argument(
        "--results-json",
        default="",
        metavar="FILE",
        help="where --eval-only / the final evaluation writes its AP table (default OUTPUT_DIR/coco_eval.json)",
    )
    return parser


def setup(args) -> CfgNode:
    """Register ``--register-coco`` datasets, build the config, check its datasets (no detectron2 setup)."""
    for name, json_file, image_dir in args.register_coco:
        register_coco(name, json_file, image_dir)
    if args.config and args.config_file:
        raise DetectionError("give either --config NAME or --config-file PATH, not both")
    config = args.config or args.config_file
    if not config:
        raise DetectionError(
            f"no config given: use --config NAME (one of {', '.join(list_configs())}) or --config-file PATH"
        )
    cfg = get_detection_cfg(config, args.opts)
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise DetectionError(
            f"MODEL.WEIGHTS={weights}: no such file (expected a classification weights file / Lightning .ckpt "
            f"of this project, a converted public checkpoint, or a detectron2 checkpoint)"
        )
    prepare_datasets(cfg, training=not args.eval_only)
    return cfg


def summary_metrics(results: Mapping[str, Any], dataset_names: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """``{dataset: {"AP": .., "AP50": .., ..., "AP-<class>": ..}}`` from ``Trainer.test``'s results.

    detectron2 returns a single dataset's results without its name; ``dataset_names`` (``cfg.DATASETS.TEST``)
    supplies it.
    """
    if "bbox" in results:  # a single dataset: detectron2 returns its dict directly
        results = {dataset_names[0] if len(dataset_names) == 1 else "": results}
    out: Dict[str, Dict[str, float]] = {}
    for dataset, res in results.items():
        bbox = res.get("bbox", {}) if isinstance(res, Mapping) else {}
        out[dataset] = {k: float(bbox[k]) for k in COCO_METRICS if k in bbox}
        out[dataset].update({k: float(v) for k, v in bbox.items() if k.startswith("AP-")})
    return out


def format_results_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    rows = ["| dataset | " + " | ".join(COCO_METRICS) + " |", "|---" * (len(COCO_METRICS) + 1) + "|"]
    for dataset, m in metrics.items():
        cells = [f"{m[k]:.2f}" if m.get(k) is not None and m[k] == m[k] else "nan" for k in COCO_METRICS]
        rows.append(f"| {dataset or '-'} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_results(path: str, metrics: Mapping[str, Any], extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``{"metrics": ..., **extra}`` as JSON, atomically (:func:`shufflenet.fileio.write_json_atomic`)."""
    payload = _nan_to_none({"metrics": metrics, **dict(extra or {})})  # strict JSON: NaN (no such boxes) -> null
    return write_json_atomic(payload, path)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, Mapping):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def _report(cfg: CfgNode, args, results: Mapping[str, Any]) -> Dict[str, Dict[str, float]]:
    metrics = summary_metrics(results, cfg.DATASETS.TEST)
    if not metrics:
        return metrics
    if comm.is_main_process():
        path = args.results_json or os.path.join(cfg.OUTPUT_DIR, "coco_eval.json")
        write_results(
            path,
            metrics,
            {"config": args.config or args.config_file, "weights": cfg.MODEL.WEIGHTS, "eval_only": bool(args.eval_only)},
        )
        print(format_results_table(metrics))
        print(f"COCO box metrics written to {path}")
    return metrics


def run(args) -> Dict[str, Dict[str, float]]:
    """One process's work (what ``launch`` calls): train (and evaluate), or evaluate only."""
    cfg = setup(args)
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="shufflenet", abbrev_name="shufflenet")
    if args.eval_only:
        model = Trainer.build_model(cfg)
        ShuffleNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        return _report(cfg, args, results)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # DefaultTrainer keeps the final evaluation (its EvalHook runs after the last iteration) here.
    results = getattr(trainer, "_last_eval_results", None) or {}
    return _report(cfg, args, results)


#: The project's own error classes: printed as one line (``error: ...``), exit status 2.
USER_ERRORS = (DetectionError, WeightsError, InvalidConfigError, UnknownModelError, MissingCompiledOpError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detection/train_net.py``: parse, validate in this process, then ``launch`` the workers."""
    args = build_argument_parser().parse_args(argv)
    try:
        setup(args)  # bad config / dataset / override: one message here, before any process starts
        launch(
            run,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
