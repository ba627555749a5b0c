"""``python classification/train.py``: LightningCLI over :class:`ImageClassifier` + :class:`ImageFolderDataModule`.

* No arguments: trains the demo (``configs/classification/demo.yaml``) on the generated shapes dataset.
* No subcommand needed: ``fit`` is the default (``train.py --config X.yaml`` = ``train.py fit --config X.yaml``);
  ``validate`` / ``test`` / ``predict`` work as in any LightningCLI.
* Every Trainer option is ``--trainer.<name>`` / ``trainer:`` in YAML (devices, num_nodes, strategy, precision,
  max_steps, accumulate_grad_batches, logger, ...); ``--print_config`` shows the merged configuration.
* ``configs/classification/base.yaml`` (the paper's recipe) is read first as jsonargparse's default config
  file, so a row config only states what differs.

Run folder (printed at start and end): ``--run_dir`` or ``<output_root>/<demo|arch>/version_<N>`` with
``checkpoints/{last,best}.ckpt`` (atomic writes), ``tensorboard/``, ``csv/metrics.csv``, ``config.yaml``,
``metrics.json``, ``curves.png`` and ``model.pth`` (the final weights, EMA if used, as a package weights
file). ``--ckpt_path last`` resumes the newest run of the same name (or ``--run_dir``) exactly.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from ..models import InvalidConfigError, UnknownModelError
from ..weights import WeightsError, save_weights
from .callbacks import AtomicCheckpointIO, RunSummary, parameter_digest
from .data import ImageFolderDataModule
from .errors import ClassificationError
from .module import ImageClassifier, recalibrate_bn

log = logging.getLogger(__name__)

__all__ = ["ClassificationCLI", "main", "resolve_run_dir", "SUBCOMMANDS"]

SUBCOMMANDS = ("fit", "validate", "test", "predict")
_RUN_DIR_ENV = "SHUFFLENET_CLASSIFICATION_RUN_DIR"  # hands rank 0's run folder to DDP worker processes
ERRORS = (ClassificationError, WeightsError, InvalidConfigError, UnknownModelError)


def _latest_version(base: Path) -> Optional[Path]:
    versions = [(int(m.group(1)), p) for p in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name))]
    return max(versions)[1] if versions else None


def resolve_run_dir(run_dir: Optional[str], output_root: str, name: str, ckpt_path: Optional[str]) -> Path:
    """The run folder: ``run_dir``, or the newest ``version_N`` to resume (``ckpt_path='last'``), or a new one."""
    if os.environ.get(_RUN_DIR_ENV) and os.environ.get("LOCAL_RANK", "0") != "0":
        return Path(os.environ[_RUN_DIR_ENV])  # a DDP worker started by rank 0: use rank 0's folder
    if run_dir:
        return Path(run_dir).expanduser()
    base = Path(output_root).expanduser() / name
    if ckpt_path == "last":
        candidates = sorted(
            (p for p in base.glob("version_*") if (p / "checkpoints" / "last.ckpt").is_file()),
            key=lambda p: int(p.name.split("_")[1]),
        )
        if not candidates:
            raise ClassificationError(
                f"--ckpt_path last: no {base}/version_*/checkpoints/last.ckpt to resume; pass --run_dir of the "
                f"run to resume, or start without --ckpt_path"
            )
        return candidates[-1]
    latest = _latest_version(base)
    n = 0 if latest is None else int(latest.name.split("_")[1]) + 1
    while True:
        path = base / f"version_{n}"
        try:
            path.mkdir(parents=True, exist_ok=False)  # reserve it (two runs never share a folder)
            return path
        except FileExistsError:
            n += 1


class RunConfigSaver(SaveConfigCallback):
    """Writes the merged configuration to ``<run folder>/config.yaml`` (rank 0), whatever the loggers are."""

    def save_config(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        path = Path(trainer.default_root_dir) / self.config_filename
        path.parent.mkdir(parents=True, exist_ok=True)
        self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=False)


class ClassificationCLI(LightningCLI):
    """LightningCLI that adds the run folder, atomic checkpoints, metrics JSON/PNG and the final export."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.add_argument("--run_dir", type=Optional[str], default=None,
                            help="Run folder (default: <output_root>/<demo|model.arch>/version_<N>).")
        parser.add_argument("--output_root", type=str, default="outputs/classification",
                            help="Parent of the default run folders.")
        parser.add_argument("--save_every_n_steps", type=int, default=1000,
                            help="Also write checkpoints/last.ckpt every N optimizer steps (mid-epoch resume).")
        parser.add_argument("--num_threads", type=Optional[int], default=None,
                            help="torch.set_num_threads for this process (default: PyTorch's choice). 1 is often "
                                 "fastest for small models on a busy CPU; data workers use the other cores.")
        parser.add_argument("--export", type=bool, default=True,
                            help="Write the final weights (EMA if used) as <run_dir>/model.pth.")

    # --- trainer: run folder, loggers, checkpoints ---------------------------------------------------------
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        sub = self.subcommand
        cfg = self.config_init[sub] if sub else self.config_init
        trainer_cfg = cfg["trainer"]
        if cfg.get("num_threads"):
            torch.set_num_threads(int(cfg["num_threads"]))
        name = "demo" if self.datamodule.root is None else self.model.hparams.arch
        ckpt_path = cfg.get("ckpt_path") if sub == "fit" else None
        run_dir = resolve_run_dir(cfg.get("run_dir"), cfg.get("output_root"), name, ckpt_path).resolve()
        os.environ[_RUN_DIR_ENV] = str(run_dir)
        self.run_dir = run_dir
        ckpt_dir = run_dir / "checkpoints"
        if ckpt_path == "last":
            last = ckpt_dir / "last.ckpt"
            if not last.is_file():
                raise ClassificationError(f"--ckpt_path last: {last} does not exist; nothing to resume")
            cfg["ckpt_path"] = str(last)
        for stale in ckpt_dir.glob(".*.tmp"):  # left by a process killed while writing a checkpoint
            stale.unlink(missing_ok=True)

        if trainer_cfg.get("default_root_dir") is None:
            kwargs["default_root_dir"] = str(run_dir)
        logger = trainer_cfg.get("logger")
        if logger is None or logger is True:
            kwargs["logger"] = [
                TensorBoardLogger(str(run_dir), name="tensorboard", version="", default_hp_metric=False),
                CSVLogger(str(run_dir), name="csv", version=""),
            ]
        if trainer_cfg.get("plugins") is None:
            kwargs["plugins"] = [AtomicCheckpointIO()]
        self.summary_callback = RunSummary(run_dir, title=f"{self.model.hparams.arch} ({run_dir.name})")
        callbacks = list(trainer_cfg.get("callbacks") or [])
        callbacks += [
            ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor="val/top1", mode="max", save_top_k=1,
                            save_last=True, auto_insert_metric_name=False, enable_version_counter=False),
            ModelCheckpoint(dirpath=str(ckpt_dir), save_top_k=0, save_last=True, enable_version_counter=False,
                            every_n_train_steps=max(1, int(cfg.get("save_every_n_steps") or 1))),
            self.summary_callback,
        ]
        if kwargs.get("logger", logger) not in (None, False):
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.is_global_zero:
            print(f"run folder: {run_dir}", flush=True)
        return trainer

    # --- after fit: BN recalibration, final validation, replica check, export, summary ----------------------
    def after_fit(self) -> None:
        trainer, model, dm = self.trainer, self.model, self.datamodule
        if trainer.interrupted:
            if trainer.is_global_zero:
                print(f"training interrupted; resume with --ckpt_path last --run_dir {self.run_dir}", flush=True)
            return
        extra: Dict[str, Any] = {}
        last = self.run_dir / "checkpoints" / "last.ckpt"
        if trainer.checkpoint_callback is not None:
            # Lightning does not checkpoint when max_steps ends the run between validations: the final
            # state goes to last.ckpt here (a resume from it stops at once).
            trainer.save_checkpoint(last)
        n = int(model.hparams.bn_recalibration_batches)
        if n > 0:
            target = model.eval_model()
            device = model.device
            batches = (b[0].to(device) for b in dm.train_dataloader())
            used = recalibrate_bn(target, batches, n)
            if trainer.world_size > 1:  # average the per-rank estimates
                for m in target.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                        m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
            extra["bn_recalibrated_batches"] = used
        val = self.summary_callback.history["val"]
        if n > 0 or not val or val[-1]["step"] != trainer.global_step:
            # training stopped mid-epoch (max_steps) or BN was re-estimated: validate the final weights
            results = trainer.validate(model, datamodule=dm, verbose=False)
            if results:
                row = {"step": trainer.global_step, "epoch": trainer.current_epoch,
                       **{k: float(v) for k, v in results[0].items()}}
                if n > 0:
                    extra["final_val"] = row
                else:
                    self.summary_callback.history["val"].append(row)
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            digests: List[Optional[str]] = [None] * trainer.world_size
            torch.distributed.all_gather_object(digests, parameter_digest(model.model))
            extra["replica_param_sha256"] = digests
            extra["replicas_identical"] = len(set(digests)) == 1
            if not extra["replicas_identical"]:
                log.error("DDP replicas diverged: parameter digests %s", digests)
        cfg = self.config_init[self.subcommand]
        if trainer.is_global_zero and cfg.get("export", True):
            summary = self.summary_callback.summary(trainer, model)
            meta = {
                "source": "shufflenet.classification (classification/train.py)",
                "run_dir": str(self.run_dir),
                "global_step": trainer.global_step,
                "ema": model.model_ema is not None,
                "classes": list(dm.classes),
                "val": extra.get("final_val") or summary.get("last_val"),
                "eval_transform": {"image_size": dm.hparams.image_size, "resize_size": dm.hparams.resize_size},
            }
            save_weights(model.eval_model(), self.run_dir / "model.pth", arch=model.hparams.arch, meta=meta)
            extra["exported_weights"] = str(self.run_dir / "model.pth")
        self.summary_callback.extra.update(extra)
        self.summary_callback.write(trainer, model)
        if trainer.is_global_zero:
            print(format_summary(self.summary_callback.summary(trainer, model)), flush=True)


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
        lines.append(f"{'after BN recalibration':<22}{pct(final, 'val/top1'):>9}{pct(final, 'val/top5'):>9}"
                     f"{s['global_step']:>8}")
    lines += [
        f"model {s.get('arch')}, {s.get('num_classes')} classes (chance {chance:.1f} %), {s['global_step']} steps",
        f"skipped unreadable images: {s.get('num_skipped_images', 0)}"
        + (" (listed in metrics.json)" if s.get("num_skipped_images") else ""),
    ]
    if "replicas_identical" in s:
        lines.append(f"DDP replicas identical: {s['replicas_identical']} ({s['world_size']} processes)")
    lines.append(f"run folder: {s['run_dir']}")
    return "\n".join(lines)


def make_cli(args: Sequence[str], base_config: Optional[Path] = None, run: bool = True) -> ClassificationCLI:
    """The CLI object: with ``run=False`` it only parses ``args`` (no subcommand) and instantiates the classes."""
    parser_kwargs: Dict[str, Any] = {}
    if base_config is not None:
        files = {"default_config_files": [str(base_config)]}
        parser_kwargs = {sub: files for sub in SUBCOMMANDS} if run else files
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended to run.*")
    warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*")
    return ClassificationCLI(
        ImageClassifier,
        ImageFolderDataModule,
        args=list(args),
        run=run,
        seed_everything_default=0,
        save_config_callback=RunConfigSaver,
        save_config_kwargs={"overwrite": True, "save_to_log_dir": False},
        parser_kwargs=parser_kwargs,
        auto_configure_optimizers=False,
    )


def main(argv: Optional[Sequence[str]] = None, base_config: Optional[Path] = None,
         demo_config: Optional[Path] = None) -> int:
    """Entry point of ``classification/train.py``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args and demo_config is not None:
        args = ["--config", str(demo_config)]
        print(f"no arguments: training the demo ({demo_config}) on the generated shapes dataset", flush=True)
    if not args or args[0] not in SUBCOMMANDS:
        args = ["fit", *args]
    try:
        make_cli(args, base_config=base_config)
    except ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        os.environ.pop(_RUN_DIR_ENV, None)
    return 0
