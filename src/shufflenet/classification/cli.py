"""``python classification/train.py``: LightningCLI over :class:`ImageClassifier` + :class:`ImageFolderDataModule`.

* No arguments: trains the demo (``configs/classification/demo.yaml``) on the generated shapes dataset.
* No subcommand needed: ``fit`` is the default (``train.py --config X.yaml`` = ``train.py fit --config X.yaml``);
  ``validate`` / ``test`` / ``predict`` work as in any LightningCLI.
* Every Trainer option is ``--trainer.<name>`` / ``trainer:`` in YAML (devices, num_nodes, strategy, precision,
  max_steps, accumulate_grad_batches, logger, ...); ``--print_config`` shows the merged configuration.
* ``configs/classification/base.yaml`` (the paper's recipe) is read first as jsonargparse's default config
  file, so a row config only states what differs.

The run's work besides the steps is done by callbacks (:mod:`.callbacks`, passed as ``trainer_defaults``), so
the module behaves the same under a plain ``Trainer``; this file adds the run folder around them.

Run folder (printed at start and end): ``--run_dir`` or ``<output_root>/<demo|arch>/version_<N>`` with
``checkpoints/{last,best}.ckpt`` (atomic writes), ``tensorboard/``, ``csv/metrics.csv``, ``config.yaml`` (the
settings the run was started with), ``config_history/config.<N>.yaml`` (one per start), ``metrics.json``,
``curves.png`` and ``model.pth`` (the final weights, EMA if used, as a package weights file).

A run folder belongs to one run:

* it is created only after the inputs were checked (data, checkpoint, settings), so a failed start leaves none;
* a run holds ``<run>/.lock`` while it runs; a second writer is refused; a lock left by a dead process on this
  host is taken over;
* ``--ckpt_path last`` resumes the newest run of the same name *started with the same settings* (or the
  ``--run_dir`` named); a resume whose settings differ from the run's ``config.yaml`` is refused with the
  differing keys, except the keys in :data:`RESUME_MAY_CHANGE` (run length, logging, workers, threads);
* resuming keeps every log: ``csv/metrics.csv`` is appended to, TensorBoard writes a new event file beside the
  old ones, and each start's configuration is added to ``config_history/``;
* SIGTERM, SIGINT and SIGUSR1 save ``last.ckpt`` of the current step and ``metrics.json``, print the resume
  command and exit with status 143 (:data:`shufflenet.errors.EXIT_INTERRUPTED`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import re
import shlex
import shutil
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import yaml
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from ..errors import EXIT_INTERRUPTED, run_cli
from ..fileio import pid_alive, remove_stale_tmp, tmp_sibling, write_text_atomic
from ..paths import configs_dir
from ..weights import read_checkpoint
from .callbacks import AtomicCheckpointIO, FinishTraining, RunSummary, StopOnSignal
from .data import ImageFolderDataModule
from .errors import ClassificationError, TrainingInterrupted
from .module import ImageClassifier

log = logging.getLogger(__name__)

__all__ = [
    "ClassificationCLI",
    "main",
    "cli",
    "resolve_run_dir",
    "RunLock",
    "RESUME_MAY_CHANGE",
    "SUBCOMMANDS",
    "AppendingCSVLogger",
]

SUBCOMMANDS = ("fit", "validate", "test", "predict")
_RUN_DIR_ENV = "SHUFFLENET_CLASSIFICATION_RUN_DIR"  # hands rank 0's run folder to DDP worker processes

#: Settings a resume may change (everything else must equal the run's config.yaml). Prefix match on the
#: dotted key: ``trainer.max_steps`` etc. lengthen or shorten a run without changing its steps; the rest
#: only change where and how a run is logged or fed, never the numbers it computes.
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "run_dir",
    "output_root",
    "config",
    "num_threads",
    "save_every_n_steps",
    "export",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.min_steps",
    "trainer.min_epochs",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "data.num_workers",
    "data.persistent_workers",
    "data.pin_memory",
)


# --- run folders ---------------------------------------------------------------------------------------------
def _versions(base: Path) -> List[Tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name)))


def flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def settings_differ(recorded: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """Keys (outside :data:`RESUME_MAY_CHANGE`) whose values differ, as ``key: old -> new``."""

    def free(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)

    out = []
    for key in sorted(set(recorded) | set(current)):
        if free(key):
            continue
        a, b = recorded.get(key), current.get(key)
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def read_settings(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The flattened settings a run folder was started with (its ``config.yaml``), or ``None``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return flatten(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as e:
        raise ClassificationError(f"{path}: cannot read the run's recorded settings ({e})") from None


def resolve_run_dir(
    run_dir: Optional[str],
    output_root: str,
    name: str,
    ckpt_path: Optional[str],
    settings: Optional[Dict[str, Any]] = None,
    reserve: bool = True,
) -> Path:
    """The run folder: ``run_dir``, or the run to resume (``ckpt_path='last'``), or a new ``version_N``.

    With ``ckpt_path='last'`` and no ``run_dir``: the newest ``version_N`` whose recorded settings equal
    ``settings`` (outside :data:`RESUME_MAY_CHANGE`); without ``settings`` (old run folders), the newest one
    with a ``last.ckpt``. A new folder is created (reserved: two runs never share one) when ``reserve``.
    """
    if os.environ.get(_RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(os.environ[_RUN_DIR_ENV])  # a DDP worker started by rank 0: use rank 0's folder
    if run_dir:
        return Path(run_dir).expanduser()
    base = Path(output_root).expanduser() / name
    if ckpt_path == "last":
        if settings is not None:
            nearest: Optional[Tuple[Path, List[str]]] = None
            for _, path in reversed(_versions(base)):
                recorded = read_settings(path)
                if recorded is None:
                    continue
                diff = settings_differ(recorded, settings)
                if not diff:
                    return path
                if nearest is None or len(diff) < len(nearest[1]):
                    nearest = (path, diff)
            if nearest is not None:
                raise ClassificationError(
                    f"--ckpt_path last: no run in {base} was started with these settings (nearest: "
                    f"{nearest[0].name}, differs in {'; '.join(nearest[1][:4])}); pass --run_dir to resume a run "
                    f"with its own settings, or start without --ckpt_path"
                )
        candidates = [p for _, p in _versions(base) if (p / "checkpoints" / "last.ckpt").is_file()]
        if not candidates:
            raise ClassificationError(
                f"--ckpt_path last: no {base}/version_*/checkpoints/last.ckpt to resume; pass --run_dir of the "
                f"run to resume, or start without --ckpt_path"
            )
        return candidates[-1]
    versions = _versions(base)
    n = versions[-1][0] + 1 if versions else 0
    while True:
        path = base / f"version_{n}"
        if not reserve:
            if not path.exists():
                return path
            n += 1
            continue
        try:
            path.mkdir(parents=True, exist_ok=False)  # reserve it (two runs never share a folder)
            return path
        except FileExistsError:
            n += 1
        except OSError as e:
            raise ClassificationError(f"cannot write to the run folder {path}: {e.strerror or e}") from None


class RunLock:
    """``<run>/.lock`` (pid, host, start time) held while a run writes its folder.

    A second writer is refused with the holder's pid; a lock whose process is gone (same host) is taken over.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self.held = False

    def _record(self) -> str:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

    def acquire(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                same_host = host == socket.gethostname()
                if isinstance(pid, int) and same_host and (pid == os.getpid() or not pid_alive(pid)) or not holder:
                    print(f"taking over the stale lock {self.path} (pid {pid} is gone)", file=sys.stderr, flush=True)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise ClassificationError(
                    f"{self.path.parent} is in use by another run (pid {pid} on {host}, since "
                    f"{holder.get('started')}); wait for it to end, or choose another --run_dir"
                ) from None
            except OSError as e:
                raise ClassificationError(
                    f"cannot write to the run folder {self.path.parent}: {e.strerror or e}"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(self._record())
            self.held = True
            return self
        raise ClassificationError(f"{self.path}: could not take the run folder's lock")

    def release(self) -> None:
        if not self.held:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        self.held = False


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued, never deleted."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:  # Lightning deletes the previous metrics.csv here
        pass


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume: new rows are appended (a new column rewrites the
    header and keeps every row)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _RunState:
    """What ``main`` needs to clean up after the CLI object (which an exception never returns)."""

    def __init__(self) -> None:
        self.run_dir: Optional[Path] = None
        self.created = False
        self.lock: Optional[RunLock] = None


_STATE: List[_RunState] = []


def _check_checkpoint(path: Path, model: ImageClassifier) -> None:
    """A ``--ckpt_path`` file must be a readable Lightning training checkpoint that fits the model."""
    ckpt = read_checkpoint(path)  # missing / truncated / not a torch file: one WeightsError line
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise ClassificationError(
            f"{path}: not a Lightning training checkpoint (no training state); a weights file (model.pth, "
            f"converted checkpoint) cannot be resumed from"
        )
    model.on_load_checkpoint(ckpt)  # architecture, classes and EMA: CheckpointMismatchError


class ClassificationCLI(LightningCLI):
    """LightningCLI that adds the run folder (settings, lock, loggers) around the run's callbacks."""

    def add_arguments_to_parser(self, parser: Any) -> None:
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

    def _settings(self) -> Dict[str, Any]:
        """The merged configuration of this start, flattened (what config.yaml records)."""
        return flatten(yaml.safe_load(self._config_text()) or {})

    def _config_text(self) -> str:
        sub = self.subcommand
        return self._parser(sub).dump(self.config[sub] if sub else self.config, skip_none=False)

    def _defaults(self, kind: type) -> Any:
        return next(c for c in self.trainer_defaults["callbacks"] if isinstance(c, kind))

    # --- trainer: run folder, loggers, checkpoints ---------------------------------------------------------
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        sub = self.subcommand
        cfg = self.config_init[sub] if sub else self.config_init
        trainer_cfg = cfg["trainer"]
        if cfg.get("num_threads"):
            torch.set_num_threads(int(cfg["num_threads"]))
        name = "demo" if self.datamodule.root is None else self.model.hparams.arch
        state = _STATE[-1] if _STATE else _RunState()
        worker = bool(os.environ.get(_RUN_DIR_ENV)) and os.environ.get("LOCAL_RANK", "0") != "0"
        if sub == "fit" and not worker:
            run_dir = self._prepare_fit(cfg, name, state)
        elif sub is None:  # parse only (make_cli(run=False)): no folder is made
            run_dir = Path(cfg.get("run_dir") or Path(cfg.get("output_root")) / name / "version_0").expanduser()
        else:
            ckpt = cfg.get("ckpt_path")
            run_dir = resolve_run_dir(cfg.get("run_dir"), cfg.get("output_root"), name, None)
            if worker and sub == "fit" and ckpt == "last":
                last = run_dir / "checkpoints" / "last.ckpt"
                cfg["ckpt_path"] = str(last) if last.is_file() else None
        run_dir = run_dir.resolve()
        if sub is not None:
            os.environ[_RUN_DIR_ENV] = str(run_dir)
        self.run_dir = run_dir
        ckpt_dir = run_dir / "checkpoints"

        if trainer_cfg.get("default_root_dir") is None:
            kwargs["default_root_dir"] = str(run_dir)
        logger = trainer_cfg.get("logger")
        if logger is None or logger is True:
            kwargs["logger"] = [
                TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
                AppendingCSVLogger(str(run_dir), name="csv", version=""),
            ]
        if trainer_cfg.get("plugins") is None:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        summary = self._defaults(RunSummary)
        summary.run_dir, summary.title = run_dir, f"{self.model.hparams.arch} ({run_dir.name})"
        finish = self._defaults(FinishTraining)
        finish.run_dir, finish.export = run_dir, bool(cfg.get("export", True))
        callbacks = list(trainer_cfg.get("callbacks") or [])
        callbacks += [
            ModelCheckpoint(
                dirpath=str(ckpt_dir),
                filename="best",
                monitor="val/top1",
                mode="max",
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            ),
            ModelCheckpoint(
                dirpath=str(ckpt_dir),
                save_top_k=0,
                save_last=True,
                enable_version_counter=False,
                every_n_train_steps=max(1, int(cfg.get("save_every_n_steps") or 1)),
            ),
        ]
        if kwargs.get("logger", logger) not in (None, False):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.is_global_zero and sub is not None:
            print(f"run folder: {run_dir}", flush=True)
        return trainer

    def _prepare_fit(self, cfg: Any, name: str, state: _RunState) -> Path:
        """Check every input, then create (or reopen) the run folder, lock it and record the settings."""
        dm = self.datamodule
        dm.setup("fit")  # data problems (empty class folder, ...) before any folder exists
        if dm.train_set is not None and len(dm.train_set) < dm.batch_size:
            raise ClassificationError(
                f"{dm.train_set.root} has {len(dm.train_set)} images, fewer than one batch "
                f"(data.batch_size={dm.batch_size}); lower data.batch_size"
            )
        settings = self._settings()
        ckpt_arg = cfg.get("ckpt_path")
        run_arg = cfg.get("run_dir")
        run_dir = resolve_run_dir(run_arg, cfg.get("output_root"), name, ckpt_arg, settings=settings, reserve=False)
        recorded = read_settings(run_dir) if run_dir.is_dir() else None
        last = run_dir / "checkpoints" / "last.ckpt"
        ckpt: Optional[Path] = None
        if ckpt_arg == "last":
            if recorded is None and not last.is_file():
                raise ClassificationError(f"--ckpt_path last: {last} does not exist; nothing to resume")
            if last.is_file():
                ckpt = last
            else:
                print(
                    f"--ckpt_path last: {run_dir} has no checkpoint yet (stopped before its first one): "
                    f"starting it from step 0",
                    flush=True,
                )
        elif ckpt_arg:
            ckpt = Path(ckpt_arg).expanduser()
            inside = ckpt.resolve().parent.parent == run_dir.resolve()
            if recorded is not None and not inside:
                raise ClassificationError(
                    f"{run_dir} already holds another run; resume it with --ckpt_path last, or give a new --run_dir "
                    f"to start from {ckpt}"
                )
        elif recorded is not None or last.is_file():
            raise ClassificationError(
                f"{run_dir} already holds a run; resume it with --ckpt_path last --run_dir {run_dir}, or choose "
                f"another --run_dir"
            )
        if ckpt is not None:
            _check_checkpoint(ckpt, self.model)
        if recorded is not None:
            diff = settings_differ(recorded, settings)
            if diff:
                raise ClassificationError(
                    f"{run_dir} was started with other settings: {'; '.join(diff)} (a resume may change only "
                    f"{', '.join(k for k in RESUME_MAY_CHANGE if k.startswith('trainer.max') or k.startswith('data.num'))}"
                    f" and logging options; see docs/classification.md)"
                )

        # inputs are fine: the folder
        state.created = not run_dir.exists()
        if not run_arg and ckpt_arg is None:
            run_dir = resolve_run_dir(None, cfg.get("output_root"), name, None)  # reserve a new version_N
            state.created = True
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = tmp_sibling(run_dir / ".write_test")
            probe.unlink()
        except OSError as e:
            raise ClassificationError(f"cannot write to the run folder {run_dir}: {e.strerror or e}") from None
        state.run_dir = run_dir
        state.lock = RunLock(run_dir).acquire()
        text = self._config_text()
        history = run_dir / "config_history"
        n = len(list(history.glob("config.*.yaml"))) if history.is_dir() else 0
        write_text_atomic(text, history / f"config.{n}.yaml")
        if recorded is None:
            write_text_atomic(text, run_dir / "config.yaml")
        cfg["ckpt_path"] = str(ckpt) if ckpt is not None else None
        for final in ("last.ckpt", "best.ckpt"):  # temporary files of writers killed mid-write
            remove_stale_tmp(run_dir / "checkpoints" / final)
        return run_dir

    def after_fit(self) -> None:
        if self.trainer.is_global_zero:
            summary = self._defaults(RunSummary)
            print(format_summary(summary.summary(self.trainer, self.model)), flush=True)


def format_summary(s: Dict[str, Any]) -> str:
    def pct(row: Optional[Dict[str, Any]], key: str) -> str:
        return f"{100 * row[key]:.2f}" if row and row.get(key) is not None else "-"

    last, best, final = s.get("last_val"), s.get("best_val"), s.get("final_val")
    chance = 100.0 / s["num_classes"] if s.get("num_classes") else float("nan")
    lines = [
        "",
        f"{'':<22}{'top-1 %':>9}{'top-5 %':>9}{'step':>8}",
        f"{'last validation':<22}{pct(last, 'val/top1'):>9}{pct(last, 'val/top5'):>9}{(last or {}).get('step', '-'):>8}",
        f"{'best validation':<22}{pct(best, 'val/top1'):>9}{pct(best, 'val/top5'):>9}{(best or {}).get('step', '-'):>8}",
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
    """Lightning's advertising lines ("💡 Tip: ... try installing litlogger/litmodels")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in str(record.msg)


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


def make_cli(args: Sequence[str], base_config: Optional[Path] = None, run: bool = True) -> ClassificationCLI:
    """The CLI object: with ``run=False`` it only parses ``args`` (no subcommand) and instantiates the classes."""
    parser_kwargs: Dict[str, Any] = {}
    if base_config is not None:
        files = {"default_config_files": [str(base_config)]}
        parser_kwargs = {sub: files for sub in SUBCOMMANDS} if run else files
    _quiet_lightning()
    return ClassificationCLI(
        ImageClassifier,
        ImageFolderDataModule,
        args=list(args),
        run=run,
        seed_everything_default=0,
        save_config_callback=None,  # config.yaml and config_history/ are written with the run folder
        trainer_defaults={"callbacks": [RunSummary(), FinishTraining(), StopOnSignal()]},
        parser_kwargs=parser_kwargs,
        auto_configure_optimizers=False,
    )


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


def _remove_failed_start(state: _RunState) -> None:
    """A run folder this start created holds nothing worth keeping unless a checkpoint was written."""
    run_dir = state.run_dir
    if run_dir is None or not state.created or not run_dir.is_dir():
        return
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def main(
    argv: Optional[Sequence[str]] = None,
    base_config: Optional[Path] = None,
    demo_config: Optional[Path] = None,
    prog: str = "python classification/train.py",
) -> int:
    """Entry point of ``classification/train.py``; returns the exit status (0, 143 when interrupted).

    Bad input raises a :class:`~shufflenet.errors.ShuffleNetError` (``cli()`` prints it as one ``error:``
    line, exit status 2); a start that fails leaves no run folder behind.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if base_config is None:
        base_config = configs_dir("classification") / "base.yaml"
    if not args and demo_config is None:
        demo_config = configs_dir("classification") / "demo.yaml"
    if not args and demo_config is not None:
        args = ["--config", str(demo_config)]
        print(f"no arguments: training the demo ({demo_config}) on the generated shapes dataset", flush=True)
    if not args or args[0] not in SUBCOMMANDS:
        args = ["fit", *args]
    state = _RunState()
    _STATE.append(state)
    try:
        make_cli(args, base_config=base_config)
    except TrainingInterrupted as e:
        if state.run_dir is not None:
            print(f"training interrupted by {e}", flush=True)
            print(f"resume with: {_resume_command(prog, args, state.run_dir)}", flush=True)
        return EXIT_INTERRUPTED
    except BaseException:
        _remove_failed_start(state)
        raise
    finally:
        if state.lock is not None:
            state.lock.release()
        _STATE.remove(state)
        os.environ.pop(_RUN_DIR_ENV, None)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``classification/train.py`` and the ``shufflenet-train`` console script: :func:`main`
    through :func:`shufflenet.errors.run_cli` (bad input: one ``error:`` line, exit status 2)."""
    script = sys.argv[0] if sys.argv and sys.argv[0] else "shufflenet-train"
    prog = f"python {script}" if script.endswith(".py") else Path(script).name
    return run_cli(lambda a: main(a, prog=prog), argv)
