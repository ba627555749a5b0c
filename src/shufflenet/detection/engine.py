"""Training and evaluation: detectron2's ``DefaultTrainer`` with the integration's checkpointer and COCO evaluation.

``detection/train_net.py`` (and the ``shufflenet-detect`` console script) call :func:`cli` here, which runs
:func:`main` through :func:`shufflenet.errors.run_cli` (any project error: one ``error:`` line, exit 2).
:func:`main` follows detectron2's own ``tools/train_net.py``: ``default_argument_parser`` flags, ``launch``
over processes, ``default_setup``, ``Trainer.test`` for ``--eval-only`` and ``trainer.resume_or_load`` +
``trainer.train()`` otherwise. Before any process starts or anything is logged, :func:`setup` checks the
config, the datasets and the weights a run will load (``MODEL.WEIGHTS``, or the checkpoint ``--resume``
continues), so bad input is one line, not a traceback after detectron2's environment and config dump.

detectron2 API used: ``DefaultTrainer``'s public overrides (``build_hooks``, ``build_train_loader``,
``build_evaluator``, ``run_step``, ``state_dict``/``load_state_dict``) and attributes (``model``, ``cfg``,
``checkpointer``, ``data_loader``, ``optimizer``), ``hooks.EvalHook``, ``build_detection_train_loader`` over an
iterable dataset with a mapper, ``DatasetMapper``, ``DatasetFromList``. Two private names remain, both for
detectron2's own bookkeeping: ``_last_eval_results`` is set beside the public :attr:`Trainer.eval_results`
because ``DefaultTrainer.train`` reads it for ``TEST.EXPECTED_RESULTS``; and the upstream-compatibility
path of :meth:`Trainer.load_state_dict` only *checks* for upstream's ``"_trainer"`` key (it touches no
private attribute).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, DatasetMapper, build_detection_train_loader
from detectron2.data.build import filter_images_with_only_crowd_annotations
from detectron2.engine import DefaultTrainer, TrainerBase, default_argument_parser, default_setup, hooks, launch
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data.workers import available_cpus
from ..errors import run_cli
from ..fileio import check_output_dir, write_json_atomic
from ..weights import WeightsError, read_weights
from .checkpoint import ShuffleNetCheckpointer, load_detector_weights, weights_path
from .compat import HAS_COMPILED_OPS, cpu_ddp
from .config import DetectionError, get_detection_cfg, list_configs, resolve_config
from .data import check_trainable, prepare_datasets, register_coco
from .resume import ResumableLoader, SeededMapper, TrainingStream, iteration_seed, seed_global_rng

__all__ = [
    "Trainer",
    "COCO_METRICS",
    "build_argument_parser",
    "setup",
    "run",
    "main",
    "cli",
    "CountingCOCOEvaluator",
    "resume_checkpoint",
    "write_results",
    "format_results_table",
]

logger = logging.getLogger(__name__)

#: The summary metrics of COCO box evaluation, in pycocotools' order.
COCO_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class CountingCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` that also reports how many boxes the model predicted (``results["detections"]``).

    With no detections at all, COCO AP is undefined and detectron2 returns NaN for every metric; the count
    lets the report say why instead of writing silent nulls.
    """

    def reset(self) -> None:
        super().reset()
        self.num_detections = 0
        self.num_images = 0

    def process(self, inputs, outputs) -> None:
        super().process(inputs, outputs)
        for output in outputs:
            if "instances" in output:
                self.num_detections += len(output["instances"])
                self.num_images += 1

    def evaluate(self, img_ids=None):
        results = super().evaluate(img_ids)
        counts = [(self.num_detections, self.num_images)]
        if getattr(self, "_distributed", False):
            comm.synchronize()
            counts = comm.gather(counts[0], dst=0)
        if not comm.is_main_process() or results is None:
            return results
        results = dict(results)
        results["detections"] = {"count": sum(c[0] for c in counts), "images": sum(c[1] for c in counts)}
        return results


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` whose checkpointer also reads this project's classification checkpoints, whose
    evaluator is :class:`CountingCOCOEvaluator` (pycocotools; detectron2's fast C++ version when compiled),
    which resumes exactly (the weights after ``--resume`` are those of an uninterrupted run, see
    :mod:`.resume`), and which resumes a detectron2 0.6 checkpoint under upstream detectron2.

    The training data come in ``TrainingSampler(seed=cfg.SEED)``'s order (as upstream detectron2 seeds it, so
    ``SEED`` gives the same sampling order on the 0.6 copy and on upstream; a negative SEED: a random seed,
    kept in the checkpoint). :attr:`seed` also seeds each image's augmentation (by its stream position) and
    the global generators before each iteration (by process and iteration).

    :attr:`eval_results` holds the last evaluation's results (the final one after :meth:`train`).
    """

    eval_results: Optional[Dict[str, Any]] = None

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        loader = self.data_loader
        if isinstance(loader, ResumableLoader):
            self.seed = loader.seed
        else:
            self.seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()

    def build_hooks(self):
        # DefaultTrainer.__init__ sets self.checkpointer and then calls build_hooks, whose
        # PeriodicCheckpointer saves through self.checkpointer: replacing it first (same arguments as
        # DefaultTrainer's DetectionCheckpointer) makes the hooks, resume_or_load and the saves use it.
        self.checkpointer = ShuffleNetCheckpointer(self.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        built = super().build_hooks()
        for i, hook in enumerate(built):
            if isinstance(hook, hooks.EvalHook):
                built[i] = hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, self.test_and_keep_results)
        return built

    def test_and_keep_results(self) -> Dict[str, Any]:
        """What ``DefaultTrainer``'s evaluation hook runs, keeping the results in :attr:`eval_results`."""
        self.eval_results = self.test(self.cfg, self.model)
        self._last_eval_results = self.eval_results  # read by DefaultTrainer.train for TEST.EXPECTED_RESULTS
        return self.eval_results

    def run_step(self) -> None:
        """detectron2's step, after seeding the global generators (anchor / RoI sampling draws from torch's)
        from (:attr:`seed`, process, iteration): the step's random numbers do not depend on what ran before."""
        seed_global_rng(iteration_seed(self.seed, comm.get_rank(), self.iter))
        super().run_step()

    def state_dict(self) -> Dict[str, Any]:
        """detectron2's trainer state plus ``"shufflenet"``: the run's seed and where the data stream stands.
        On the 0.6 copy, whose trainer state has no optimizer, the optimizer state is added as upstream
        detectron2 writes it (``"_trainer"``), so the resumed run continues with the same momentum and LR."""
        state = super().state_dict()
        if "_trainer" not in state and not self.cfg.SOLVER.AMP.ENABLED:
            state["_trainer"] = {"iteration": self.iter, "optimizer": self.optimizer.state_dict()}
        extra: Dict[str, Any] = {"seed": self.seed}
        if isinstance(self.data_loader, ResumableLoader):
            extra["data"] = self.data_loader.state_dict()
        state["shufflenet"] = extra
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Upstream detectron2 saves its inner trainer's state (optimizer, AMP scaler) under ``"_trainer"`` and
        needs it on resume; detectron2 0.6 never wrote it. A 0.6 checkpoint resumed under upstream loads
        the iteration and hook states (scheduler) and starts the optimizer state afresh, with a warning,
        instead of failing with ``KeyError: '_trainer'``. On the 0.6 copy the optimizer state is read from
        ``"_trainer"`` here. The data stream and the seed continue where the checkpoint left them."""
        install_writes_trainer = "_trainer" in super().state_dict()
        if "_trainer" not in state_dict and install_writes_trainer:
            logger.warning(
                "This checkpoint was written by detectron2 0.6 (no '_trainer' state): resuming at iteration %s "
                "with the scheduler state restored and a fresh optimizer state (SGD momentum restarts).",
                state_dict.get("iteration"),
            )
            TrainerBase.load_state_dict(self, state_dict)
        else:
            super().load_state_dict(state_dict)
            if not install_writes_trainer:
                if "_trainer" in state_dict:
                    self.optimizer.load_state_dict(state_dict["_trainer"]["optimizer"])
                else:
                    logger.warning(
                        "This checkpoint has no optimizer state: resuming at iteration %s with a fresh optimizer "
                        "(SGD momentum restarts, the first step uses the initial learning rate).",
                        state_dict.get("iteration"),
                    )
        self._resume_data(state_dict.get("shufflenet"), int(state_dict["iteration"]) + 1)

    def _resume_data(self, extra: Optional[Dict[str, Any]], batches: int) -> None:
        loader = self.data_loader
        if extra is None:
            if isinstance(loader, ResumableLoader):
                logger.warning(
                    "This checkpoint does not say where the data stream stood: it is recomputed for %d batches "
                    "from SEED=%s.",
                    batches,
                    loader.seed,
                )
                loader.resume(batches)
            return
        self.seed = int(extra["seed"])
        if isinstance(loader, ResumableLoader):
            loader.reseed(self.seed)
            problem = loader.resume(batches, extra.get("data"))
            if problem:
                logger.warning("The resumed data stream may differ from an uninterrupted run's: %s", problem)
            else:
                logger.info("Data stream resumed after %d batches (seed %d).", batches, self.seed)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """detectron2's train loader, over dataset dicts checked for at least one usable box. With
        ``DATALOADER.SAMPLER_TRAIN TrainingSampler``: a :class:`~.resume.ResumableLoader` over a
        :class:`~.resume.TrainingStream` (``TrainingSampler(seed=cfg.SEED)``'s order; a negative SEED: a random
        seed shared by the processes) with per-image seeded augmentation. Other samplers: detectron2's own."""
        if cfg.MODEL.LOAD_PROPOSALS or cfg.MODEL.KEYPOINT_ON:
            return build_detection_train_loader(cfg)
        dicts = []
        for name in cfg.DATASETS.TRAIN:  # each set loaded once, as get_detection_dataset_dicts would
            one = DatasetCatalog.get(name)
            check_trainable(name, one)
            dicts.extend(one)
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            dicts = filter_images_with_only_crowd_annotations(dicts)
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            return build_detection_train_loader(cfg, dataset=dicts)
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        world = comm.get_world_size()
        stream = TrainingStream(dicts, seed, comm.get_rank(), world)
        mapper = SeededMapper(DatasetMapper(cfg, True), seed)
        loader = build_detection_train_loader(
            stream,
            mapper=mapper,
            sampler=None,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
        return ResumableLoader(
            loader, stream, mapper, cfg.SOLVER.IMS_PER_BATCH // world, cfg.DATALOADER.ASPECT_RATIO_GROUPING
        )

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return CountingCOCOEvaluator(
            dataset_name, tasks=("bbox",), output_dir=output_folder, use_fast_impl=HAS_COMPILED_OPS
        )


def build_argument_parser():
    """detectron2's ``default_argument_parser`` plus ``--config`` and ``--register-coco``."""
    parser = default_argument_parser()
    prog = parser.prog  # the command as typed: shufflenet-detect, or train_net.py
    parser.epilog = (
        "Examples:\n"
        f"  {prog} --config coco_shufflenet2x.yaml MODEL.WEIGHTS model.pth\n"
        f"  {prog} --config coco_shufflenet1x_300 --eval-only MODEL.WEIGHTS "
        "outputs/detection/coco_shufflenet1x_300/model_final.pth\n"
        f"  {prog} --config demo_shapes\n"
        f"--config and --config-file both take a packaged name or a path. Packaged configs: {', '.join(list_configs())}"
    )
    parser.add_argument(
        "--config",
        default="",
        metavar="NAME",
        help="a packaged config name (e.g. coco_shufflenet2x.yaml) or a path; same as detectron2's --config-file",
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
        "--verbose",
        action="store_true",
        help="also print detectron2's environment, full config and model (always in OUTPUT_DIR/log.txt)",
    )
    parser.add_argument(
        "--results-json",
        default="",
        metavar="FILE",
        help="where --eval-only / the final evaluation writes its AP table (default OUTPUT_DIR/coco_eval.json)",
    )
    return parser


def resume_checkpoint(cfg: CfgNode) -> Optional[Path]:
    """The checkpoint ``--resume`` continues from: the file named in ``OUTPUT_DIR/last_checkpoint`` (fvcore's
    record of the latest save), or ``None`` when the folder has none (detectron2 then loads MODEL.WEIGHTS)."""
    tag = Path(cfg.OUTPUT_DIR) / "last_checkpoint"
    if not tag.is_file():
        return None
    name = tag.read_text().strip()
    return Path(cfg.OUTPUT_DIR) / name if name else None


def check_weights(cfg: CfgNode, path: str, what: str) -> None:
    """Read ``path`` with the project's one reader and load it into a CPU copy of the detector, so a missing,
    corrupt, unconverted or mismatching file is one message before any process, log or output exists."""
    local = weights_path(path)
    if "://" in local:
        return  # a URL: detectron2 fetches it itself
    if not os.path.isfile(local):
        raise DetectionError(
            f"{what}={path}: no such file (expected a classification weights file / Lightning .ckpt of this "
            f"project, a converted public checkpoint, or a detectron2 checkpoint)"
        )
    if not local.endswith((".pkl", ".pyth")):
        try:
            read_weights(local)
        except WeightsError as e:
            raise DetectionError(f"{what}: {e}") from None
    cpu = cfg.clone()
    cpu.defrost()
    cpu.MODEL.DEVICE = "cpu"
    model = build_model(cpu)
    logging.disable(logging.WARNING)  # the run logs the load (transfer report) once, after its setup
    try:
        load_detector_weights(model, path)
    except KeyError as e:  # a detectron2 checkpoint without the entries detectron2 expects
        raise DetectionError(f"{what}={path}: not a detectron2 checkpoint detectron2 can load ({e!r})") from None
    finally:
        logging.disable(logging.NOTSET)
        del model


def setup(args, verify_weights: bool = True) -> CfgNode:
    """Register ``--register-coco`` datasets, build the config, check its datasets and (``verify_weights``)
    the weights the run will load (no detectron2 setup, nothing written)."""
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
    check_output_dir(cfg.OUTPUT_DIR, "OUTPUT_DIR", DetectionError)  # before any work, as every command
    prepare_datasets(cfg, training=not args.eval_only)
    resumed = resume_checkpoint(cfg) if args.resume else None
    if not verify_weights:
        return _cap_workers(cfg, say=False)  # a worker's setup: the parent said it
    if resumed is not None:
        if not resumed.is_file():
            raise DetectionError(
                f"--resume: {cfg.OUTPUT_DIR}/last_checkpoint names {resumed.name}, which does not exist; remove "
                f"{cfg.OUTPUT_DIR}/last_checkpoint to start from MODEL.WEIGHTS, or restore the file"
            )
        check_weights(cfg, str(resumed), "--resume checkpoint")
    elif cfg.MODEL.WEIGHTS:
        check_weights(cfg, cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
    return _cap_workers(cfg, say=True)


def _cap_workers(cfg: CfgNode, say: bool) -> CfgNode:
    """``DATALOADER.NUM_WORKERS`` at most the cores this process has (the COCO configs ask for 4; more workers than
    cores only contend, and torch warns), with one note once the config is known to be good (``say``)."""
    cpus = available_cpus()
    if cfg.DATALOADER.NUM_WORKERS > cpus:
        if say:
            print(
                f"note: DATALOADER.NUM_WORKERS {cfg.DATALOADER.NUM_WORKERS} -> {cpus} (the CPU cores this process has)",
                file=sys.stderr,
            )
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = cpus
        cfg.freeze()
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


def detection_counts(results: Mapping[str, Any], dataset_names: Sequence[str] = ()) -> Dict[str, Dict[str, int]]:
    """``{dataset: {"count": boxes predicted, "images": images evaluated}}`` (:class:`CountingCOCOEvaluator`)."""
    if "bbox" in results:
        results = {dataset_names[0] if len(dataset_names) == 1 else "": results}
    return {d: dict(r["detections"]) for d, r in results.items() if isinstance(r, Mapping) and "detections" in r}


def explain_undefined(
    metrics: Mapping[str, Mapping[str, float]], counts: Mapping[str, Mapping[str, int]], cfg: CfgNode
) -> Dict[str, str]:
    """Why a dataset's AP is undefined (NaN -> null in the JSON), in words: no detections, or no ground truth."""
    notes = {}
    for dataset, m in metrics.items():
        ap = m.get("AP")
        if ap is not None and ap == ap:
            continue
        count = counts.get(dataset, {})
        if count.get("count") == 0:
            notes[dataset] = (
                f"the model made no detections on the {count.get('images', 0)} images of {dataset}: every box scored "
                f"below MODEL.ROI_HEADS.SCORE_THRESH_TEST={cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST} (an untrained or "
                f"barely trained detector?), so COCO AP is undefined (null), not 0"
            )
        else:
            notes[dataset] = (
                f"COCO AP on {dataset} is undefined (null): its annotations have no box of the evaluated classes "
                f"({count.get('count', '?')} boxes were predicted)"
            )
    return notes


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


def _report(cfg: CfgNode, args, results: Mapping[str, Any], started: float = 0.0) -> Dict[str, Dict[str, float]]:
    metrics = summary_metrics(results, cfg.DATASETS.TEST)
    if not metrics:
        _list_written(cfg, started)
        return metrics
    if comm.is_main_process():
        counts = detection_counts(results, cfg.DATASETS.TEST)
        notes = explain_undefined(metrics, counts, cfg)
        path = args.results_json or os.path.join(cfg.OUTPUT_DIR, "coco_eval.json")
        print(format_results_table(metrics))
        for note in notes.values():
            print(f"warning: {note}", file=sys.stderr, flush=True)
        extra = {
            "config": args.config or args.config_file,
            "weights": cfg.MODEL.WEIGHTS,
            "eval_only": bool(args.eval_only),
            "detections": counts,
        }
        if notes:
            extra["notes"] = notes
        try:
            write_results(path, metrics, extra)
        except OSError as e:  # the table is printed already; the file is not half-written (atomic)
            raise DetectionError(f"--results-json {path}: cannot write the results ({e.strerror or e})") from None
        print(f"COCO box metrics written to {path}")
        _list_written(cfg, started)
    return metrics


def _list_written(cfg: CfgNode, started: float) -> None:
    if started and comm.is_main_process():
        files = _written_files(Path(cfg.OUTPUT_DIR), started)
        if files:
            print(f"wrote in {cfg.OUTPUT_DIR}: " + ", ".join(str(p.relative_to(cfg.OUTPUT_DIR)) for p in files))


#: Long records of detectron2's setup and trainer that go to OUTPUT_DIR/log.txt only, unless --verbose.
_LOG_FILE_ONLY = (
    "Environment info:",
    "Command line arguments:",
    "Contents of args.config_file",
    "Running with full config",
    "Model:\n",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _ConsoleOnlyShort(logging.Filter):
    """Drops detectron2's environment, config and model dumps from the console (they stay in log.txt)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LOG_FILE_ONLY)


class _NoColour(logging.Filter):
    """Strips ANSI colour codes (detectron2 highlights the config with pygments) from what a file receives."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), ()
        return True


class _HarmlessNoCuda(logging.Filter):
    """torch's C++-extension helper warns ``No CUDA runtime is found`` when detectron2 collects its environment
    on a machine without CUDA; a CPU run (MODEL.DEVICE cpu) needs none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No CUDA runtime is found" not in str(record.msg)


def configure_logging(cfg: CfgNode, verbose: bool) -> None:
    """Before ``default_setup``: create detectron2's loggers as it will (``setup_logger`` is cached on its
    arguments, so ``default_setup`` gets these very loggers), then keep the environment / config / model dumps
    in OUTPUT_DIR/log.txt (console too with ``verbose``) and colour codes out of every file and non-terminal."""
    rank = comm.get_rank()
    loggers = [
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank, name="fvcore"),
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=rank),
    ]
    for logger_ in loggers:
        for handler in logger_.handlers:
            stream = getattr(handler, "stream", None)
            console = stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)  # else log.txt
            if not (console and hasattr(stream, "isatty") and stream.isatty()):
                handler.addFilter(_NoColour())
            if console and not verbose:
                handler.addFilter(_ConsoleOnlyShort())
    if not torch.cuda.is_available():
        logging.getLogger("torch.utils.cpp_extension").addFilter(_HarmlessNoCuda())


def _written_files(folder: Path, since: float) -> List[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.stat().st_mtime >= since)


def run(args) -> Dict[str, Dict[str, float]]:
    """One process's work (what ``launch`` calls): train (and evaluate), or evaluate only."""
    cfg = setup(args, verify_weights=False)  # main() checked the weights before any process started
    metrics_file = Path(cfg.OUTPUT_DIR) / "metrics.json"
    had_metrics = metrics_file.exists()
    started = time.time() - 1
    try:
        configure_logging(cfg, verbose=args.verbose)
        default_setup(cfg, args)
        if comm.is_main_process() and not args.verbose:
            print(
                f"detectron2's environment, config and model are in {Path(cfg.OUTPUT_DIR) / 'log.txt'} "
                "(--verbose prints them)"
            )
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="shufflenet", abbrev_name="shufflenet")
        if args.eval_only:
            model = Trainer.build_model(cfg)
            ShuffleNetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
            results = Trainer.test(cfg, model)
            return _report(cfg, args, results, started)
        with cpu_ddp():  # --num-gpus N without CUDA under upstream detectron2 (see compat.cpu_ddp)
            trainer = Trainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        trainer.train()
        # The final evaluation (DefaultTrainer's EvalHook runs it after the last iteration).
        return _report(cfg, args, trainer.eval_results or {}, started)
    except BaseException:
        # detectron2's JSONWriter opens metrics.json when the trainer is built: a run that fails before
        # logging anything leaves no empty file behind.
        if not had_metrics and metrics_file.is_file() and metrics_file.stat().st_size == 0:
            metrics_file.unlink()
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detection/train_net.py``: parse, validate in this process, then ``launch`` the workers.

    Bad input raises a :class:`~shufflenet.errors.ShuffleNetError` (:func:`cli` prints it as one line)."""
    args = build_argument_parser().parse_args(argv)
    setup(args)  # bad config / dataset / weights / override: one message here, before any process starts
    # detectron2's default_setup opens --config-file itself: hand it the resolved file (a packaged name works
    # with --config-file as with --config)
    args.config_file, args.config = str(resolve_config(args.config or args.config_file)), ""
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (``shufflenet-detect``, ``detection/train_net.py``): :func:`main` through
    :func:`shufflenet.errors.run_cli`."""
    with warnings.catch_warnings():
        # detectron2's anchor generator calls torch.meshgrid without `indexing`; it means "ij", the default
        warnings.filterwarnings("ignore", message=r"torch\.meshgrid: in an upcoming release", category=UserWarning)
        return run_cli(main, argv)
