"""``shufflenet-train`` (``classification/train.py``): LightningCLI over :class:`ImageClassifier` +
:class:`ImageFolderDataModule`.

* No ``--data.root``: the demo, whatever else is overridden: ``configs/classification/demo.yaml`` on top of
  ``base.yaml``, on the generated shapes dataset, said in the first line. A ``--config`` recipe meant for real
  data (one that does not set ``data.root: null``) without ``--data.root`` is refused in one line.
* No subcommand needed: ``fit`` is the default; ``validate`` / ``test`` / ``predict`` work as in any
  LightningCLI (with ``--ckpt_path`` they take the model's settings and image size from the checkpoint;
  ``predict`` writes the top-k classes of every image of ``--data.predict_root`` as JSON). They never make a
  run folder.
* Which setting wins (defaults, base/demo configs, published weights, ``--config``, flags, checkpoint, run
  folder): the table :data:`PRECEDENCE`, next to :func:`settings_plan` which implements its first rows.
* ``--config NAME`` takes a packaged config by name (``demo``, ``shufflenet_v1_x1_0_g3``, ...) or a file.
* Every Trainer option is ``--trainer.<name>`` / ``trainer:`` in YAML; ``--print_config`` shows the merged
  configuration. ``configs/classification/base.yaml`` (the paper's recipe) is read first as jsonargparse's
  default config file, so a row config only states what differs.

The run's work besides the steps is done by single-purpose callbacks (:mod:`.callbacks`), listed in
:func:`make_cli`'s ``trainer_defaults``; the module behaves the same under a plain ``Trainer``. This file adds
the run folder (:class:`~.runs.RunFolder`) around them from LightningCLI's hooks.

Run folder (printed before any work and at the end): ``--run_dir`` or ``<output_root>/<demo|arch>/version_<N>``
with ``checkpoints/{last,best}.ckpt`` (atomic writes), ``tensorboard/``, ``csv/metrics.csv``, ``config.yaml``
(the settings the run was started with), ``config_history/config.<N>.yaml`` (one per start), ``metrics.json``,
``curves.png`` and ``model.pth`` (the final weights, EMA if used, as a package weights file).

A run folder belongs to one run:

* it is created only after the inputs were checked (data, checkpoint, settings), so a failed start leaves none;
* a run holds ``<run>/.lock`` while it runs; a second writer is refused; a lock left by a dead process on this
  host is taken over;
* ``--ckpt_path last`` resumes the newest run of the same name *started with the same settings* (or the
  ``--run_dir`` named); a resume whose settings differ from the run's ``config.yaml`` is refused with the
  differing keys, except the keys in :data:`RESUME_MAY_CHANGE` (run length, logging, workers, threads);
* resuming keeps every log: ``csv/metrics.csv`` is continued from the checkpoint's step (the rows of replayed
  steps are replaced, never doubled), TensorBoard writes a new event file beside the old ones, and each start's
  configuration is added to ``config_history/``;
* SIGTERM, SIGINT and SIGUSR1 save ``last.ckpt`` of the current step and ``metrics.json``, print the resume
  command and exit with status 143 (:data:`shufflenet.errors.EXIT_INTERRUPTED`); during the sanity check (before
  the first step) they save nothing, say so in one line and exit with 143 too.
* under DDP, worker processes (Lightning's ``LOCAL_RANK``/``NODE_RANK``/``RANK``) never create or lock a
  folder; the checkpoint folder rank 0 chose reaches them through Lightning's own broadcast in
  ``ModelCheckpoint.setup``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar, TQDMProgressBar
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.model_summary import get_human_readable_count

from ..errors import EXIT_INTERRUPTED, run_cli
from ..paths import configs_dir
from .callbacks import (
    AppendingCSVLogger,
    AtomicCheckpointIO,
    ExportWeights,
    PredictionWriter,
    RunSummary,
    StopOnNonFiniteLoss,
    StopOnSignal,
    end_of_run_callbacks,
)
from .data import ImageFolderDataModule, find_split_dirs
from .errors import ClassificationError, DataError, TrainingInterrupted
from .module import ImageClassifier
from .runs import (
    RESUME_MAY_CHANGE,
    RunFolder,
    RunLock,
    flatten,
    is_ddp_worker,
    read_training_checkpoint,
    resolve_run_dir,
)

log = logging.getLogger(__name__)

__all__ = [
    "ClassificationCLI",
    "RunFolder",
    "main",
    "cli",
    "make_cli",
    "resolve_run_dir",
    "RunLock",
    "RESUME_MAY_CHANGE",
    "SUBCOMMANDS",
    "AppendingCSVLogger",
]

SUBCOMMANDS = ("fit", "validate", "test", "predict")


def console_callbacks(trainer_cfg: Dict[str, Any], callbacks: List[Any]) -> List[Any]:
    """Lightning's text progress bar and model summary, chosen here rather than by what else is installed:
    Lightning switches both to their Rich versions whenever ``rich`` is importable (LiteRT's converter brings
    it), and Rich's live display writes nothing readable to a log file or a pipe (a SLURM log, CI). A progress
    bar or summary callback of the user's (``--trainer.callbacks RichProgressBar``) is kept instead, and
    ``--trainer.enable_progress_bar false`` / ``--trainer.enable_model_summary false`` still turn them off.
    When the output is not a terminal (a log file, a pipe), the bar is redrawn every ``trainer.log_every_n_steps``
    batches (and at the end of each epoch) instead of every batch, so a log holds a few lines per epoch."""
    out: List[Any] = []
    if trainer_cfg.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        every = 1 if sys.stdout.isatty() else max(1, int(trainer_cfg.get("log_every_n_steps") or 50))
        out.append(TQDMProgressBar(refresh_rate=every))
    if trainer_cfg.get("enable_model_summary") is not False and not any(isinstance(c, ModelSummary) for c in callbacks):
        summary = ModelSummary(max_depth=1)
        summary.summarize = _summary_table  # type: ignore[method-assign]  (this instance's table; see there)
        out.append(summary)
    return out


def _summary_table(
    summary_data: List[Tuple[str, List[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    total_training_modes: Dict[str, int],
    total_flops: int = 0,
    **summarize_kwargs: Any,
) -> None:
    """``ModelSummary.summarize`` (Lightning's extension point) of the summary :func:`console_callbacks` adds:
    Lightning's table, without its FLOPs column and total when nothing was counted (Lightning counts FLOPs only
    for a module with an ``example_input_array``; ``shufflenet-flops`` gives the model's)."""
    if total_flops:
        ModelSummary.summarize(
            summary_data,
            total_parameters,
            trainable_parameters,
            model_size,
            total_training_modes,
            total_flops=total_flops,
            **summarize_kwargs,
        )
        return
    columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
    widths = [max([len(name), *(len(v) for v in values)]) for name, values in columns]
    rows = [" | ".join(name.ljust(w) for (name, _), w in zip(columns, widths))]
    rows.append("-" * len(rows[0]))
    for i in range(len(columns[0][1]) if columns else 0):
        rows.append(" | ".join(values[i].ljust(w) for (_, values), w in zip(columns, widths)))
    rows.append("-" * len(rows[0]))
    rows += [
        f"{get_human_readable_count(trainable_parameters):<10}Trainable params",
        f"{get_human_readable_count(total_parameters - trainable_parameters):<10}Non-trainable params",
        f"{get_human_readable_count(total_parameters):<10}Total params",
        f"{model_size:<10.3f}Total estimated model params size (MB)",
    ]
    rank_zero_info("\n" + "\n".join(rows))


class ClassificationCLI(LightningCLI):
    """LightningCLI that puts a :class:`RunFolder` around the run's callbacks.

    ``run_folder`` is the folder object of this start (``main`` makes it and cleans up after it even when the
    constructor raises); ``subcommand`` is the subcommand ``args`` asks for (``predict`` takes the number of
    classes from its checkpoint instead of the data folder); ``demo`` names the config files of a demo run (its
    first line says what runs). Which setting wins: :data:`PRECEDENCE`.
    """

    def __init__(
        self,
        *args: Any,
        run_folder: Optional[RunFolder] = None,
        subcommand: str = "fit",
        demo: Optional[str] = None,
        **kwargs: Any,
    ):
        self.run_folder = run_folder if run_folder is not None else RunFolder()
        self._requested = subcommand
        self._demo = demo
        self._weights_line: Optional[str] = None
        self.run_dir: Optional[Path] = None
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        if self._requested != "predict":
            parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument(
            "--run_dir",
            type=Optional[str],
            default=None,
            help="Run folder (default: <output_root>/<demo|model.arch>/version_<N>).",
        )
        parser.add_argument(
            "--output_root", type=str, default="outputs/classification", help="Parent of the default run folders."
        )
        parser.add_argument(
            "--save_every_n_steps",
            type=int,
            default=1000,
            help="Also write checkpoints/last.ckpt every N optimizer steps (mid-epoch resume).",
        )
        parser.add_argument(
            "--num_threads",
            type=Optional[int],
            default=None,
            help="torch.set_num_threads for this process (default: PyTorch's choice). 1 is often "
            "fastest for small models on a busy CPU; data workers use the other cores.",
        )
        parser.add_argument(
            "--export", type=bool, default=True, help="Write the final weights (EMA if used) as <run_dir>/model.pth."
        )
        parser.add_argument("--top_k", type=int, default=5, help="predict: classes listed per image.")
        parser.add_argument(
            "--predictions",
            type=Optional[str],
            default=None,
            help="predict: the JSON file to write (default: <ckpt_path>.predictions.json).",
        )

    # --- hooks ----------------------------------------------------------------------------------------------
    def parse_arguments(self, parser: Any, args: Any) -> None:
        """jsonargparse's parse, then rows 4 and 7 of :data:`PRECEDENCE` (settings taken from weights and
        checkpoint files for the keys the user did not set)."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        cfg = self.config[sub] if sub else self.config
        argv = [str(a) for a in (args or [])]
        weights = cfg.model.get("weights")
        if weights and sub in ("fit", None):  # row 4: the published weights' preprocessing
            for key, value in published_preprocessing(weights, cfg.model.get("arch")).items():
                if not _flag_given(argv, f"data.{key}") and not _set_in_configs(cfg.get("config"), "data", key):
                    cfg.data[key] = value
        if not sub:
            return
        ckpt = cfg.get("ckpt_path")
        if sub == "predict" and not ckpt:
            raise ClassificationError("predict needs --ckpt_path (a checkpoint written by shufflenet-train)")
        if ckpt and ckpt not in ("last", "best", "hpc", "registry"):
            # read here, before LightningCLI loads the model's settings from it with torch.load
            state = read_training_checkpoint(Path(ckpt).expanduser())
            if sub != "fit":  # row 7: the image size the model was trained at, unless a flag sets it
                for key, value in (state.get("datamodule_hyper_parameters") or {}).items():
                    if key in ("image_size", "resize_size") and not _flag_given(argv, f"data.{key}"):
                        cfg.data[key] = value
        if sub == "predict" and cfg.get("top_k", 1) < 1:
            raise ClassificationError(f"--top_k must be >= 1, got {cfg.get('top_k')}")

    def before_instantiate_classes(self) -> None:
        sub = self.subcommand
        cfg = self.config[sub] if sub else self.config
        if self._demo and sub is not None and not is_ddp_worker():
            self._print_demo_line(cfg)
        if cfg.get("num_threads"):
            torch.set_num_threads(int(cfg["num_threads"]))  # restored by main() when it returns
        root = cfg.get("data", {}).get("root") if sub != "predict" else None
        if root:  # the class count comes from the folders: check it before a 1-class model is built
            train, _ = find_split_dirs(root)
            classes = sorted(e.name for e in os.scandir(train) if e.is_dir() and not e.name.startswith("."))
            if len(classes) == 1:
                only = train / classes[0]
                empty = not any(p.is_file() for p in only.rglob("*"))
                raise DataError(
                    f"{train} has one class folder ({classes[0]}{', which holds no images' if empty else ''}); "
                    f"a classifier needs at least 2 classes: one subfolder per class under {train}, each with images"
                )

    def instantiate_classes(self) -> None:
        """LightningCLI's (which ends with :meth:`instantiate_trainer`), except that a fit that resumes from a
        checkpoint does not load ``model.weights``: the checkpoint's weights are restored over them (the setting
        stays recorded in the run's config.yaml)."""
        sub = self.subcommand
        cfg = self.config[sub] if sub else self.config
        weights = cfg.model.get("weights")
        if not (weights and sub == "fit" and cfg.get("ckpt_path") and self._resumes(cfg)):
            return super().instantiate_classes()
        self._weights_line = f"model.weights {weights}: not loaded (resuming: the checkpoint's weights are restored)"
        cfg.model.weights = None
        try:
            super().instantiate_classes()
        finally:
            cfg.model.weights = weights

    def _resumes(self, cfg: Any) -> bool:
        """Whether this fit starts from a checkpoint: a file, or ``last`` of a run that wrote one."""
        ckpt = cfg.get("ckpt_path")
        if ckpt != "last":
            return bool(ckpt)
        name = "demo" if cfg.data.get("root") is None else cfg.model.get("arch")
        try:
            run_dir = resolve_run_dir(
                cfg.get("run_dir"), cfg.get("output_root"), name, "last", settings=self._settings(), reserve=False
            )
        except ClassificationError:
            return False  # said again, in its own words, where the run folder is prepared
        return (run_dir / "checkpoints" / "last.ckpt").is_file()

    def _settings(self) -> Dict[str, Any]:
        """The merged configuration of this start, flattened (what config.yaml records)."""
        return flatten(yaml.safe_load(self._config_text()) or {})

    def _config_text(self) -> str:
        sub = self.subcommand
        return self._parser(sub).dump(self.config[sub] if sub else self.config, skip_none=False)

    def _default(self, kind: type) -> Any:
        return next(c for c in self.trainer_defaults["callbacks"] if isinstance(c, kind))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        sub = self.subcommand
        cfg = self.config_init[sub] if sub else self.config_init
        name = "demo" if self.datamodule.root is None else self.model.hparams.arch
        if sub in ("validate", "test", "predict"):
            return self._evaluation_trainer(sub, cfg, kwargs)
        if sub is None:  # parse only (make_cli(run=False)): no folder is made
            run_dir = Path(cfg.get("run_dir") or Path(cfg.get("output_root")) / name / "version_0").expanduser()
        elif is_ddp_worker():
            run_dir = self.run_folder.for_worker(cfg, name, self._settings())
            cfg["ckpt_path"] = str(self.run_folder.checkpoint) if self.run_folder.checkpoint else None
        else:
            run_dir = self.run_folder.prepare(
                cfg, name, self._settings(), self._config_text(), self.model, self.datamodule
            )
            cfg["ckpt_path"] = str(self.run_folder.checkpoint) if self.run_folder.checkpoint else None
        self.run_dir = run_dir
        trainer_cfg = cfg["trainer"]
        if trainer_cfg.get("default_root_dir") is None:
            kwargs["default_root_dir"] = str(run_dir)
        logger = trainer_cfg.get("logger")
        if logger is None or logger is True:
            kwargs["logger"] = [
                TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
                AppendingCSVLogger(str(run_dir), name="csv", resume_step=self.run_folder.resume_step),
            ]
        if trainer_cfg.get("plugins") is None:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        summary = self._default(RunSummary)
        summary.run_dir, summary.title = run_dir, f"{self.model.hparams.arch} ({run_dir.name})"
        self._default(ExportWeights).enabled = bool(cfg.get("export", True))
        ckpt_dir = run_dir / "checkpoints"
        callbacks = list(trainer_cfg.get("callbacks") or [])
        callbacks += [
            ModelCheckpoint(  # best.ckpt by validation top-1, and last.ckpt at every validation
                dirpath=str(ckpt_dir),
                filename="best",
                monitor="val/top1",
                mode="max",
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
            ModelCheckpoint(  # last.ckpt every --save_every_n_steps steps (mid-epoch resume)
                dirpath=str(ckpt_dir),
                save_top_k=0,
                save_last=True,
                enable_version_counter=False,
                every_n_train_steps=max(1, int(cfg.get("save_every_n_steps") or 1)),
            ),
        ]
        if kwargs.get("logger", logger) not in (None, False):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        kwargs["callbacks"] = callbacks + console_callbacks(trainer_cfg, callbacks)
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.is_global_zero and sub is not None:
            self._print_header(trainer, run_dir)
        return trainer

    def _evaluation_trainer(self, sub: str, cfg: Any, kwargs: Dict[str, Any]) -> Trainer:
        """validate / test / predict: no run folder, no logs unless asked for (``--trainer.logger``), nothing
        written but the predictions."""
        trainer_cfg = cfg["trainer"]
        if trainer_cfg.get("logger") is None:
            kwargs["logger"] = False
        kwargs["enable_checkpointing"] = False
        ckpt = cfg.get("ckpt_path")
        writer = self._default(PredictionWriter)
        if sub == "predict":
            out = cfg.get("predictions") or f"{ckpt}.predictions.json"
            writer.output = Path(out).expanduser()
            if writer.output.is_dir():
                raise ClassificationError(f"--predictions {writer.output} is a folder; name a JSON file")
            if not writer.output.parent.is_dir():
                raise ClassificationError(
                    f"--predictions {writer.output}: the folder {writer.output.parent} does not exist"
                )
            self.model.predict_top_k = int(cfg.get("top_k") or 5)  # class names: from the checkpoint, on load
        callbacks = list(trainer_cfg.get("callbacks") or [])
        kwargs["callbacks"] = callbacks + console_callbacks(trainer_cfg, callbacks)
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.is_global_zero:
            dm = self.datamodule
            data = getattr(dm, "hparams", {}).get("predict_root") if sub == "predict" else self._data_text()
            print(
                f"{sub}: model {self.model.hparams.arch}, checkpoint {ckpt or '(random weights)'}, data {data}, "
                f"image {dm.hparams.image_size} px (resize {dm.hparams.resize_size}), batch {dm.batch_size}",
                flush=True,
            )
        return trainer

    def _data_text(self) -> str:
        dm = self.datamodule
        if dm.root is None:
            from .demo import demo_root

            return f"{demo_root()} (the generated demo shapes)"
        return str(Path(dm.root).expanduser())

    def _print_demo_line(self, cfg: Any) -> None:
        """The first line of a demo run: what will run (the parsed settings, not a config file's)."""
        print(
            f"no --data.root: training the demo ({self._demo}: {cfg.model.arch} at {cfg.data.image_size} px, batch "
            f"{cfg.data.batch_size}, {cfg.trainer.max_steps} steps) on the generated shapes dataset; pass "
            f"--data.root FOLDER to train on your data",
            flush=True,
        )

    def _print_header(self, trainer: Trainer, run_dir: Path) -> None:
        """What the run is, before any work: model, data, image size, batch and where it writes."""
        report = getattr(self.model, "weights_report", None)
        line = report["line"] if report else self._weights_line
        if line:
            print(line, flush=True)
        dm = self.datamodule
        world = trainer.world_size * trainer.accumulate_grad_batches
        resume = f", resuming from step {self.run_folder.resume_step}" if self.run_folder.resume_step else ""
        print(
            f"model {self.model.hparams.arch}, data {self._data_text()}, image {dm.hparams.image_size} px, "
            f"batch {dm.batch_size} per process (global {dm.batch_size * world}){resume}",
            flush=True,
        )
        print(f"run folder: {run_dir}", flush=True)

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            print(format_summary(self._default(RunSummary).summary(self.trainer, self.model)), flush=True)


def format_summary(s: Dict[str, Any]) -> str:
    def pct(row: Optional[Dict[str, Any]], key: str) -> str:
        return f"{100 * row[key]:.2f}" if row and row.get(key) is not None else "-"

    last, best, final = s.get("last_val"), s.get("best_val"), s.get("final_val")
    chance = 100.0 / s["num_classes"] if s.get("num_classes") else float("nan")
    lines = [
        "",
        f"{'':<22}{'top-1 %':>9}{'top-5 %':>9}{'step':>8}",
        *(
            f"{label:<22}{pct(row, 'val/top1'):>9}{pct(row, 'val/top5'):>9}{(row or {}).get('step', '-'):>8}"
            for label, row in (("last validation", last), ("best validation", best))
        ),
    ]
    if final:
        lines.append(
            f"{'after BN recalibration':<22}{pct(final, 'val/top1'):>9}{pct(final, 'val/top5'):>9}{s['global_step']:>8}"
        )
    lines += [
        f"model {s.get('arch')}, {s.get('num_classes')} classes (chance {chance:.1f} %), {s['global_step']} steps",
        f"skipped unreadable images: {s.get('num_skipped_images', 0)}"
        + (" (listed in metrics.json)" if s.get("num_skipped_images") else ""),
    ]
    if "replicas_identical" in s:
        lines.append(f"DDP replicas identical: {s['replicas_identical']} ({s['world_size']} processes)")
    lines.append(f"run folder: {s['run_dir']}")
    return "\n".join(lines)


class _DropTips(logging.Filter):
    """Lightning's advertising lines ("💡 Tip: ... try installing litlogger/litmodels"), and its note that the
    Trainer already has a model summary callback (the one :func:`console_callbacks` chose on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return "Tip: For seamless" not in text and "Trainer already configured with model summary" not in text


def _quiet_lightning() -> None:
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
        "lightning_utilities.core.rank_zero",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(_DropTips())
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended to run.*")
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")  # capped at the CPU count
    # a resumed run writes into its own checkpoints/ (that is the point); best.ckpt falls back to last.ckpt
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", message=r".*could not find the monitored key in the returned metrics.*")


def make_cli(
    args: Sequence[str],
    base_config: Optional[Path] = None,
    run: bool = True,
    default_config_files: Optional[Sequence[Path]] = None,
    run_folder: Optional[RunFolder] = None,
    datamodule_class: type = ImageFolderDataModule,
    demo: Optional[str] = None,
) -> ClassificationCLI:
    """The CLI object: with ``run=False`` it only parses ``args`` (no subcommand) and instantiates the classes.

    The run's callbacks, in the order they run (Lightning moves its ``ModelCheckpoint``\\ s, added with the run
    folder in :meth:`ClassificationCLI.instantiate_trainer`, behind them): :class:`RunSummary`, the end-of-run
    callbacks of :func:`~.callbacks.end_of_run_callbacks`, :class:`StopOnSignal`, :class:`StopOnNonFiniteLoss`
    and :class:`PredictionWriter` (``predict`` only).
    """
    files = [str(p) for p in (default_config_files or ([base_config] if base_config is not None else []))]
    parser_kwargs: Dict[str, Any] = {}
    if files:
        parser_kwargs = (
            {sub: {"default_config_files": files} for sub in SUBCOMMANDS} if run else {"default_config_files": files}
        )
    _quiet_lightning()
    args = list(args)
    return ClassificationCLI(
        ImageClassifier,
        datamodule_class,
        args=args,
        run=run,
        run_folder=run_folder,
        demo=demo,
        subcommand=args[0] if run and args and args[0] in SUBCOMMANDS else "fit",
        seed_everything_default=0,
        save_config_callback=None,  # config.yaml and config_history/ are written with the run folder
        trainer_defaults={
            "callbacks": [
                RunSummary(),
                *end_of_run_callbacks(),
                StopOnSignal(),
                StopOnNonFiniteLoss(),
                PredictionWriter(),
            ]
        },
        parser_kwargs=parser_kwargs,
        auto_configure_optimizers=False,
    )


# --- which setting wins ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SettingsPlan:
    """What :func:`settings_plan` decides before LightningCLI parses: ``args`` (subcommand first, packaged config
    names replaced by their files), ``default_config_files`` (rows 2-3 of :data:`PRECEDENCE`) and ``demo``
    (``None``, or the config files the demo run stands on, for its first line)."""

    args: List[str]
    default_config_files: List[Path]
    demo: Optional[str]


#: Which setting wins, later rows over earlier ones. Rows 2-3 and the packaged names of row 5: :func:`settings_plan`
#: (below); rows 1-3, 5, 6 and 8: jsonargparse / LightningCLI (``default_config_files``, then the command line
#: in order); rows 4 and 7: :meth:`ClassificationCLI.parse_arguments`; row 9:
#: :meth:`ClassificationCLI.instantiate_trainer`.
PRECEDENCE = """\
 1  signature defaults   ImageClassifier, ImageFolderDataModule and Trainer arguments
 2  base.yaml            always (jsonargparse default_config_files)
 3  demo.yaml            when no data source is set anywhere (no --data.root / --data.shards / --data flag, no
                         --config setting data.root or data.shards to a value); instead a --config that does not
                         mention data.root is a real-data recipe and fit refuses it
 4  published weights    --model.weights DEFAULT|NAME: data.image_size / data.resize_size of the weights' own
                         preprocessing
 5  --config FILE|NAME   in command-line order (a packaged NAME is replaced by its file)
 6  command-line flags   in order: a flag after a --config wins over it
 7  --ckpt_path FILE     validate/test/predict: data.image_size / data.resize_size of the checkpoint unless a flag
                         sets them; the model's settings of the checkpoint over every row (LightningCLI)
 8  linked               model.num_classes = data.num_classes (the class folders), except for predict
 9  the run folder       fit: --ckpt_path last -> the run's last.ckpt; trainer.default_root_dir, logger and plugins
                         default to the run folder
"""


def _flag_given(argv: Sequence[str], key: str) -> bool:
    """``--KEY VALUE`` or ``--KEY=VALUE`` among the arguments."""
    return any(a == f"--{key}" or a.startswith(f"--{key}=") for a in argv)


def _set_in_configs(configs: Any, group: str, key: str) -> bool:
    """Whether one of the ``--config`` files sets ``group.key``."""
    for path in configs or []:
        try:
            cfg = yaml.safe_load(Path(os.fspath(path)).read_text()) or {}
        except (OSError, yaml.YAMLError, TypeError):
            continue
        section = cfg.get(group) if isinstance(cfg, dict) else None
        if isinstance(section, dict) and key in section:
            return True
    return False


def published_preprocessing(weights: str, arch: Optional[str]) -> Dict[str, int]:
    """``{"image_size", "resize_size"}`` of the published weights ``weights`` names for ``arch`` (their own eval
    preprocessing: resize the short side, center crop); ``{}`` for a weights file. The data modules normalise with
    ImageNet's mean/std, which must be the weights' too."""
    from ..constants import IMAGENET_MEAN, IMAGENET_STD
    from ..models.pretrained import ShuffleNetWeights, UnknownWeightsError, resolve_weights

    try:
        found = resolve_weights(weights, arch)
    except UnknownWeightsError:
        return {}  # the model says what is wrong with the name when it loads the weights (a resume never does)
    if not isinstance(found, ShuffleNetWeights):
        return {}
    t = found.transforms()
    if [round(v, 6) for v in t.mean] != [round(v, 6) for v in IMAGENET_MEAN] or [round(v, 6) for v in t.std] != [
        round(v, 6) for v in IMAGENET_STD
    ]:
        raise ClassificationError(
            f"model.weights {weights}: the weights expect mean {t.mean} / std {t.std}; the data modules normalise "
            f"with ImageNet's {list(IMAGENET_MEAN)} / {list(IMAGENET_STD)}"
        )
    return {"image_size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0])}


def settings_plan(
    argv: Sequence[str], base_config: Optional[Path] = None, demo_config: Optional[Path] = None
) -> SettingsPlan:
    """Rows 2, 3 and 5 of :data:`PRECEDENCE`: the default config files (base, and demo when no data source is set) and
    the arguments with packaged config names resolved; a real-data recipe without data is refused here."""
    args = list(argv)
    sub = args[0] if args and args[0] in SUBCOMMANDS else "fit"
    rest = args[1:] if args and args[0] in SUBCOMMANDS else args
    rest, configs = _with_packaged_configs(rest)
    base = base_config if base_config is not None else configs_dir("classification") / "base.yaml"
    demo = demo_config if demo_config is not None else configs_dir("classification") / "demo.yaml"
    plan = SettingsPlan([sub, *rest], [base], None)
    asks_help = any(a in ("-h", "--help") or a.startswith("--print_config") for a in rest)
    if _root_on_command_line(rest):
        return plan
    roots = [(c, *_config_data_root(c)) for c in configs]
    root_set = [r for r in roots if r[1]]
    if root_set and root_set[-1][2] is not None:
        return plan  # the last --config that sets a data source sets one
    real = [c for c, sets, _ in roots if not sets]
    if real and sub == "fit" and not root_set and not asks_help:
        raise ClassificationError(
            f"--config {real[-1]} is a recipe for real data and no --data.root was given: pass --data.root "
            f"FOLDER (ImageNet layout: train/<class>/*, val/<class>/*), or leave out --config to train the demo"
        )
    plan.default_config_files.append(demo)
    if sub == "fit" and not asks_help:
        on_top = [c.name for c in configs]
        plan.demo = demo.name + (f" under --config {', '.join(on_top)}" if on_top else "")
    return plan


# --- the command line before LightningCLI sees it ----------------------------------------------------------------
def packaged_config(name: str) -> Path:
    """``--config NAME``: a file, else the packaged ``configs/classification/NAME.yaml``; else one error line."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = name[:-5] if name.endswith(".yaml") else name
    packaged = configs_dir("classification") / f"{stem}.yaml"
    if "/" not in name and packaged.is_file():
        return packaged
    names = sorted(p.stem for p in configs_dir("classification").glob("*.yaml"))
    raise ClassificationError(
        f"--config {name}: no such file, and not a packaged config (packaged: {', '.join(names[:6])}, ... "
        f"{len(names)} in all; see docs/classification.md)"
    )


def _with_packaged_configs(args: Sequence[str]) -> Tuple[List[str], List[Path]]:
    """``args`` with each ``--config NAME`` replaced by the file it names, and those files."""
    out: List[str] = []
    files: List[Path] = []
    it = iter(args)
    for a in it:
        if a == "--config":
            value = next(it, None)
            if value is None:
                out.append(a)
                break
            files.append(packaged_config(value))
            out += [a, str(files[-1])]
        elif a.startswith("--config="):
            files.append(packaged_config(a.split("=", 1)[1]))
            out.append(f"--config={files[-1]}")
        else:
            out.append(a)
    return out, files


def _config_data_root(path: Path) -> Tuple[bool, Optional[str]]:
    """``(sets data.root, its value)`` of a config file."""
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ClassificationError(f"--config {path}: cannot be read as YAML ({e})") from None
    data = cfg.get("data") if isinstance(cfg, dict) else None
    if isinstance(data, dict) and data.get("shards"):
        return True, data["shards"]
    if isinstance(data, dict) and "root" in data:
        return True, data["root"]
    return False, None


def _root_on_command_line(args: Sequence[str]) -> bool:
    """A data source on the command line: a folder (``--data.root``), shards (``--data.shards``) or a whole
    ``--data`` group. Any of them means real data, never the demo."""
    flags = ("--data.root", "--data.shards", "--data")
    return any(a in flags or a.startswith(tuple(f + "=" for f in flags)) for a in args)


@contextlib.contextmanager
def torch_settings_restored() -> Iterator[None]:
    """Put back what a run changes in this process: the thread count (``--num_threads``), the deterministic flags
    (``--trainer.deterministic``) and the cuBLAS workspace variable Lightning sets with them."""
    threads = torch.get_num_threads()
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def _resume_command(prog: str, args: Sequence[str], run_dir: Path) -> str:
    """The user's command with ``--ckpt_path last --run_dir RUN`` instead of any ckpt_path/run_dir it had."""
    keep: List[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--ckpt_path", "--run_dir"):
            skip = True
            continue
        if a.startswith(("--ckpt_path=", "--run_dir=")) or a == "fit":
            continue
        keep.append(a)
    return f"{prog} {shlex.join([*keep, '--ckpt_path', 'last', '--run_dir', str(run_dir)])}"


def main(
    argv: Optional[Sequence[str]] = None,
    base_config: Optional[Path] = None,
    demo_config: Optional[Path] = None,
    prog: str = "shufflenet-train",
    datamodule_class: type = ImageFolderDataModule,
) -> int:
    """Entry point of ``shufflenet-train``; returns the exit status (0, 143 when interrupted).

    Bad input raises a :class:`~shufflenet.errors.ShuffleNetError` (``cli()`` prints it as one ``error:``
    line, exit status 2); a start that fails leaves no run folder behind. What the run changes in this process
    (threads, deterministic flags) is put back when it returns.
    """
    plan = settings_plan(sys.argv[1:] if argv is None else argv, base_config, demo_config)
    folder = RunFolder()
    with torch_settings_restored():
        try:
            make_cli(
                plan.args,
                default_config_files=plan.default_config_files,
                run_folder=folder,
                datamodule_class=datamodule_class,
                demo=plan.demo,
            )
        except TrainingInterrupted as e:
            if e.step is None:
                folder.discard_failed_start()
                print(
                    f"interrupted by {e.signal_name} during the sanity check, before the first step: nothing was "
                    f"saved (exit status {EXIT_INTERRUPTED})",
                    file=sys.stderr,
                    flush=True,
                )
            elif folder.path is not None:
                print(f"training interrupted by {e}", flush=True)
                print(f"resume with: {_resume_command(prog, plan.args, folder.path)}", flush=True)
            return EXIT_INTERRUPTED
        except BaseException:
            folder.discard_failed_start()
            raise
        finally:
            folder.close()
    return 0


def command_name(argv0: Optional[str] = None) -> str:
    """The command the user typed: ``shufflenet-train``, or ``python classification/train.py``."""
    script = argv0 if argv0 is not None else (sys.argv[0] if sys.argv and sys.argv[0] else "shufflenet-train")
    if script.endswith(".py"):
        return f"python {script}"
    if script in ("-c", "-m", ""):
        return "shufflenet-train"
    return Path(script).name


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``classification/train.py`` and the ``shufflenet-train`` console script: :func:`main`
    through :func:`shufflenet.errors.run_cli` (bad input: one ``error:`` line, exit status 2)."""
    prog = command_name()
    return run_cli(lambda a: main(a, prog=prog), argv)
