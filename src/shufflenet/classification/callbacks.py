"""Callbacks, the checkpoint plugin and the CSV logger of a training run: everything a run does besides the steps.

Each does one job and works in any ``Trainer`` (``shufflenet-train`` lists them in its ``trainer_defaults``,
:func:`shufflenet.classification.cli.make_cli`); paths default to ``trainer.default_root_dir`` (the run folder
under the CLI):

* :class:`AtomicCheckpointIO`: checkpoints appear whole or not at all; a failed write (full disk) keeps the
  previous file and ends the run with one error line (:class:`ClassificationError`).
* :class:`RunSummary`: the run's metric history (kept in checkpoints), ``metrics.json`` and ``curves.png``.
* At the end of ``fit``, in this order (:func:`end_of_run_callbacks`): :class:`FinalCheckpoint` (``last.ckpt``
  of the final step), :class:`RecalibrateBN`, :class:`ValidateFinalWeights`, :class:`ReplicaCheck` (DDP),
  :class:`ExportWeights` (``model.pth``), :class:`BestCheckpointFallback` (``best.ckpt`` when no validation ran).
* :class:`StopOnSignal`: SIGTERM, SIGINT and SIGUSR1 (SLURM's pre-emption warning) end the run at the end of
  the current training step with ``checkpoints/last.ckpt`` of that step and ``metrics.json``, then raise
  :class:`~shufflenet.classification.errors.TrainingInterrupted` (the CLI prints the resume command and exits
  with 143). Resuming from that checkpoint gives the uninterrupted run's weights bit for bit. A signal during
  the sanity check (before the first step) saves nothing.
* :class:`StopOnNonFiniteLoss`: a NaN/inf loss stops the run before its step, naming the step.
* :class:`AppendingCSVLogger`: ``csv/metrics.csv`` that a resume continues instead of deleting.
* :class:`PredictionWriter`: the top-k predictions of ``predict`` as one JSON file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Union

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..fileio import append_text, atomic_write, tmp_sibling, write_json_atomic, write_text_atomic
from ..weights import atomic_torch_save, read_checkpoint, save_weights
from .errors import ClassificationError, TrainingInterrupted

log = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointIO",
    "AppendingCSVLogger",
    "RunSummary",
    "FinalCheckpoint",
    "RecalibrateBN",
    "ValidateFinalWeights",
    "ReplicaCheck",
    "ExportWeights",
    "BestCheckpointFallback",
    "end_of_run_callbacks",
    "StopOnSignal",
    "StopOnNonFiniteLoss",
    "PredictionWriter",
    "STOP_SIGNALS",
    "plot_curves",
    "parameter_digest",
    "recalibrate_bn",
]

#: The signals that end a run with a checkpoint of the current step (SIGUSR1: SLURM's ``--signal`` default).
STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGUSR1")) if s is not None)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor], num_batches: int) -> int:
    """Re-estimate every BatchNorm's running mean/var from ``num_batches`` batches (cumulative average).

    Returns the number of batches used. The model's train/eval mode and the BN momenta are restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or num_batches <= 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.train()
    used = 0
    for x in batches:
        if used >= num_batches:
            break
        model(x)
        used += 1
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.train(was_training)
    return used


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes local checkpoints to a temporary file in the same folder, fsyncs it, then ``os.replace``\\ s.

    A process killed at any moment (SIGKILL included) leaves either the previous ``last.ckpt`` or the new
    one, never a truncated file; a stale ``.last.ckpt.<pid>.*.tmp`` is all a kill can leave behind, and the
    next writer of that name removes it.

    A write that fails (``OSError``: a full disk, a quota, a folder that went away) removes its temporary file,
    keeps the previous checkpoint of that name as it was, and raises :class:`ClassificationError` (one
    ``error:`` line from the CLI, exit status 2).
    """

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        try:
            atomic_torch_save(checkpoint, path)
        except OSError as e:
            kept = "the previous one is kept" if Path(path).is_file() else "no earlier checkpoint of that name exists"
            raise ClassificationError(
                f"cannot write the checkpoint {path}: {e.strerror or e} (step {checkpoint.get('global_step')}); "
                f"{kept}; free space and resume with --ckpt_path last"
            ) from None


def _write_output(path: Path, write: Callable[[], Any]) -> Any:
    """``write()``, the staged write of a run output ``path``; a failure (``OSError``: a full disk, a quota) ends the
    run with one error line that says the previous file of that name is kept (the staged write left it alone)."""
    try:
        return write()
    except OSError as e:
        kept = "the previous one is kept" if Path(path).is_file() else "nothing was written"
        raise ClassificationError(f"cannot write {path}: {e.strerror or e}; {kept}") from None


def plot_curves(history: Dict[str, List[Dict[str, float]]], path: Path, title: str = "") -> Optional[Path]:
    """Training loss (per logged step) and validation loss/accuracy (per validation) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = history.get("train", []), history.get("val", [])
    if not train and not val:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], lw=0.8, alpha=0.6, label="train loss")
    if val:
        steps = [r["step"] for r in val]
        ax_loss.plot(steps, [r["val/loss"] for r in val], "o-", label="val loss")
        ax_acc.plot(steps, [100 * r["val/top1"] for r in val], "o-", label="val top-1")
        ax_acc.plot(steps, [100 * r["val/top5"] for r in val], "s--", label="val top-5")
    if train and "top1" in train[0]:
        ax_acc.plot(
            [r["step"] for r in train], [100 * r["top1"] for r in train], lw=0.8, alpha=0.5, label="train top-1 (batch)"
        )
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="step", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=100, format="png")
    plt.close(fig)
    return path


def parameter_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes, in state-dict order (equal digests = identical replicas)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _scalar(v: Any) -> Optional[float]:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _run_dir(trainer: pl.Trainer, run_dir: Optional[Path]) -> Path:
    return Path(run_dir) if run_dir is not None else Path(trainer.default_root_dir)


def _find(trainer: pl.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def _checkpoint_dir(trainer: pl.Trainer) -> Optional[Path]:
    """The folder of ``last.ckpt``: the checkpoint callback's, else ``<default_root_dir>/checkpoints``;
    ``None`` when the Trainer writes no checkpoints."""
    cb = trainer.checkpoint_callback
    if cb is None:
        return None
    dirpath = getattr(cb, "dirpath", None)
    return Path(dirpath) if dirpath else Path(trainer.default_root_dir) / "checkpoints"


class RunSummary(pl.Callback):
    """Keeps the run's metric history (saved in checkpoints, so it survives a resume) and writes
    ``metrics.json`` and ``curves.png`` into the run folder (default: ``trainer.default_root_dir``) after
    every validation and at the end."""

    def __init__(self, run_dir: Optional[Path] = None, title: str = "") -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.title = title
        self.history: Dict[str, List[Dict[str, float]]] = {"train": [], "val": []}
        self.extra: Dict[str, Any] = {}

    # history is part of the checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.history = state_dict.get("history", self.history)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.run_dir is None:
            self.run_dir = Path(trainer.default_root_dir)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step % max(1, trainer.log_every_n_steps) != 0 or (
            self.history["train"] and self.history["train"][-1]["step"] == step
        ):
            return
        m = trainer.callback_metrics
        row = {"step": step, "epoch": trainer.current_epoch}
        for key, name in (("train/loss", "loss"), ("train/top1", "top1"), ("train/lr", "lr")):
            if key in m and _scalar(m[key]) is not None:
                row[name] = _scalar(m[key])
        if "loss" in row:
            self.history["train"].append(row)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        m = trainer.callback_metrics
        row = {"step": trainer.global_step, "epoch": trainer.current_epoch}
        for key in ("val/loss", "val/top1", "val/top5"):
            if key in m:
                row[key] = _scalar(m[key])
        if "val/top1" in row:
            self.history["val"] = [r for r in self.history["val"] if r["step"] != row["step"]] + [row]
        self.write(trainer, pl_module)

    def write_quietly(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """:meth:`write` on the way out of a failed or interrupted run: a failure (full disk) is logged, never
        raised over the error that ends the run."""
        try:
            self.write(trainer, pl_module)
        except (OSError, ClassificationError) as e:
            log.warning("could not write metrics.json: %s", getattr(e, "strerror", None) or e)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after every callback's on_train_end: the end-of-run results are in self.extra
        self.write(trainer, pl_module)

    def summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Dict[str, Any]:
        val = self.history["val"]
        best = max(val, key=lambda r: r["val/top1"]) if val else None
        hp = dict(pl_module.hparams)
        dm = trainer.datamodule
        out: Dict[str, Any] = {
            "run_dir": str(_run_dir(trainer, self.run_dir)),
            "arch": hp.get("arch"),
            "num_classes": hp.get("num_classes"),
            "data_root": str(dm.resolved_root()) if dm is not None and hasattr(dm, "resolved_root") else None,
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "world_size": trainer.world_size,
            "last_val": val[-1] if val else None,
            "best_val": best,
            "skipped_images": dict(getattr(dm, "skipped", {}) or {}),
            "hparams": {k: v for k, v in hp.items() if isinstance(v, (int, float, str, bool, type(None), list, dict))},
            "history": self.history,
        }
        out["num_skipped_images"] = len(out["skipped_images"])
        out.update(self.extra)
        return out

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        run_dir = _run_dir(trainer, self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_output(
            run_dir / "metrics.json",
            lambda: write_json_atomic(self.summary(trainer, pl_module), run_dir / "metrics.json"),
        )
        try:
            plot_curves(self.history, run_dir / "curves.png", self.title)
        except Exception as e:  # a plot must never stop training
            log.warning("could not write curves.png: %s", e)


@torch.no_grad()
def validate_weights(
    model: nn.Module, batches: Iterable[Any], num_classes: int, device: torch.device
) -> Dict[str, float]:
    """Top-1/top-5 accuracy and mean cross-entropy of ``model`` (eval mode) over ``(x, y, ...)`` batches.

    Every process evaluates every batch it is given (no cross-process reduction): the DDP replicas are
    identical, so every rank gets the same numbers.
    """
    top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro", sync_on_compute=False).to(device)
    top5 = MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", sync_on_compute=False).to(device)
    was_training = model.training
    model.eval()
    loss_sum, n = 0.0, 0
    for batch in batches:
        x, y = batch[0].to(device), batch[1].to(device)
        if len(y) == 0:
            continue
        logits = model(x)
        loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        n += len(y)
        top1.update(logits, y)
        top5.update(logits, y)
    model.train(was_training)
    if n == 0:
        return {}
    return {"val/loss": loss_sum / n, "val/top1": float(top1.compute()), "val/top5": float(top5.compute())}


def _extra(trainer: pl.Trainer) -> Dict[str, Any]:
    """Where an end-of-run callback records its result: the :class:`RunSummary`'s ``extra`` (so it lands in
    ``metrics.json``), or a throw-away dict when the Trainer has no summary."""
    summary = _find(trainer, RunSummary)
    return summary.extra if summary is not None else {}


class FinalCheckpoint(pl.Callback):
    """``checkpoints/last.ckpt`` of the final step, at the end of a successful ``fit``.

    ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` whenever it saves, but at the end of training only
    when it never saved before; a run whose ``max_steps`` falls between two periodic saves would end with an
    older ``last.ckpt``, and a resume from it would redo the last steps. Runs before :class:`RecalibrateBN`
    (the checkpoint holds the training state, the recalibrated statistics go to ``model.pth``).
    """

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt_dir = _checkpoint_dir(trainer)
        if ckpt_dir is not None:
            trainer.save_checkpoint(ckpt_dir / "last.ckpt", weights_only=False)


class RecalibrateBN(pl.Callback):
    """Re-estimate the BN statistics of the final weights (EMA if used) over ``num_batches`` training batches
    at the end of ``fit`` (default: the module's ``bn_recalibration_batches``; 0: off), averaged over the DDP
    ranks. Records ``bn_recalibrated_batches`` in ``metrics.json``."""

    def __init__(self, num_batches: Optional[int] = None) -> None:
        self.num_batches = num_batches
        self.used = 0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = self.num_batches
        if n is None:
            n = int(pl_module.hparams.get("bn_recalibration_batches", 0) or 0)
        self.used = 0
        if n <= 0:
            return
        target = pl_module.eval_model() if hasattr(pl_module, "eval_model") else pl_module
        dm = trainer.datamodule
        loader = dm.train_dataloader() if dm is not None else trainer.train_dataloader
        self.used = recalibrate_bn(target, (b[0].to(pl_module.device) for b in loader), n)
        if trainer.world_size > 1:  # average the per-rank estimates
            for m in target.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                    m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
        _extra(trainer)["bn_recalibrated_batches"] = self.used


class ValidateFinalWeights(pl.Callback):
    """Validate the final weights at the end of ``fit`` when the last validation was not at the final step or
    :class:`RecalibrateBN` changed them. The result is ``final_val`` (after recalibration) or the last row of
    the validation history in ``metrics.json``; ``self.result`` holds it."""

    def __init__(self) -> None:
        self.result: Optional[Dict[str, Any]] = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.result = None
        summary = _find(trainer, RunSummary)
        recal = _find(trainer, RecalibrateBN)
        recalibrated = recal is not None and recal.used > 0
        history = summary.history["val"] if summary is not None else []
        if not recalibrated and history and history[-1]["step"] == trainer.global_step:
            return  # the last validation saw these weights
        dm = trainer.datamodule
        loader = dm.val_dataloader() if dm is not None else trainer.val_dataloaders
        target = pl_module.eval_model() if hasattr(pl_module, "eval_model") else pl_module
        num_classes = int(pl_module.hparams.get("num_classes"))
        metrics = validate_weights(target, loader if loader is not None else [], num_classes, pl_module.device)
        if not metrics:
            return
        self.result = {"step": trainer.global_step, "epoch": trainer.current_epoch, **metrics}
        if recalibrated:
            _extra(trainer)["final_val"] = self.result
        elif summary is not None:
            summary.history["val"].append(self.result)


class ReplicaCheck(pl.Callback):
    """Under DDP, the parameter digest of every rank at the end of ``fit`` (``replicas_identical`` in
    ``metrics.json``; an error in the log when they differ)."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size <= 1 or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        digests: List[Optional[str]] = [None] * trainer.world_size
        torch.distributed.all_gather_object(digests, parameter_digest(pl_module.model))
        extra = _extra(trainer)
        extra["replica_param_sha256"] = digests
        extra["replicas_identical"] = len(set(digests)) == 1
        if not extra["replicas_identical"]:
            log.error("DDP replicas diverged: parameter digests %s", digests)


class ExportWeights(pl.Callback):
    """``<run>/model.pth`` at the end of ``fit``: the final weights (EMA if used, after :class:`RecalibrateBN`)
    as a package weights file, with the classes, the evaluation transform and the final validation in its
    ``meta`` (``shufflenet-eval RUN`` reads them). ``enabled=False`` (``--export false``) writes nothing."""

    def __init__(self, enabled: bool = True, run_dir: Optional[Path] = None) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self.enabled and trainer.is_global_zero):
            return
        run_dir = _run_dir(trainer, self.run_dir)
        summary = _find(trainer, RunSummary)
        s = summary.summary(trainer, pl_module) if summary is not None else {}
        dm = trainer.datamodule
        meta = {
            "source": "shufflenet.classification (shufflenet-train)",
            "run_dir": str(run_dir),
            "global_step": trainer.global_step,
            "ema": getattr(pl_module, "model_ema", None) is not None,
            "classes": list(getattr(dm, "classes", []) or []),
            "data_root": s.get("data_root"),
            "val": s.get("final_val") or s.get("last_val"),
            "eval_transform": {"image_size": dm.hparams.get("image_size"), "resize_size": dm.hparams.get("resize_size")}
            if dm is not None
            else None,
        }
        target = pl_module.eval_model() if hasattr(pl_module, "eval_model") else pl_module
        _write_output(
            run_dir / "model.pth",
            lambda: save_weights(target, run_dir / "model.pth", arch=pl_module.hparams.get("arch"), meta=meta),
        )
        _extra(trainer)["exported_weights"] = str(run_dir / "model.pth")


class BestCheckpointFallback(pl.Callback):
    """``checkpoints/best.ckpt`` always exists after ``fit``: when no validation ran during training (a run
    shorter than one validation interval), it is a copy of ``last.ckpt``, and the run says so."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt_dir = _checkpoint_dir(trainer)
        if not trainer.is_global_zero or ckpt_dir is None:
            return
        last, best = ckpt_dir / "last.ckpt", ckpt_dir / "best.ckpt"
        if not last.is_file() or best.is_file():
            return
        tmp = tmp_sibling(best)
        try:
            shutil.copyfile(last, tmp)
            tmp.replace(best)
        finally:
            tmp.unlink(missing_ok=True)
        _extra(trainer)["best_is_last"] = True
        print(f"no validation ran during training: {best} is a copy of last.ckpt", flush=True)


def end_of_run_callbacks(export: bool = True) -> List[pl.Callback]:
    """The end-of-``fit`` callbacks in the order they must run (``shufflenet-train`` passes them, with
    :class:`RunSummary`, :class:`StopOnSignal` and :class:`StopOnNonFiniteLoss`, as ``trainer_defaults``)."""
    return [
        FinalCheckpoint(),
        RecalibrateBN(),
        ValidateFinalWeights(),
        ReplicaCheck(),
        ExportWeights(enabled=export),
        BestCheckpointFallback(),
    ]


class StopOnNonFiniteLoss(pl.Callback):
    """A NaN or infinite training loss stops the run before that step changes the weights.

    One ``torch.isfinite`` on the loss per step (Lightning's ``detect_anomaly`` checks every operation of the
    backward pass and is far too slow to leave on). The run ends with :class:`ClassificationError`, which names
    the step and the last checkpoint written (the newest good state; nothing is written after the bad loss).
    Under DDP the ranks agree (one all-reduce of a flag per step), so no rank waits for another.
    """

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        here = not bool(torch.isfinite(loss.detach()).all())
        bad = here
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(here, all=False)
        if not bad:
            return
        ckpt_dir = _checkpoint_dir(trainer)
        last = ckpt_dir / "last.ckpt" if ckpt_dir is not None else None
        kept = "no checkpoint was written yet"
        if last is not None and last.is_file():
            try:
                kept_step = read_checkpoint(last).get("global_step")
                kept = f"the last good checkpoint is {last} (step {kept_step})"
            except Exception:  # noqa: BLE001 - the message must still come out
                kept = f"the last checkpoint is {last}"
        value = float(loss.detach().float().mean())
        what = (
            f"training loss is {value}"
            if here
            else f"training loss is not finite on another DDP process (rank {trainer.global_rank}'s is {value:.4g})"
        )
        raise ClassificationError(
            f"{what} in optimizer step {trainer.global_step + 1} "
            f"(global_step {trainer.global_step}, epoch {trainer.current_epoch}); stopped before that step changed "
            f"the weights; {kept} (lower model.lr, or check the data)"
        )


class StopOnSignal(pl.Callback):
    """SIGTERM / SIGINT / SIGUSR1 end the run at the end of the current training step, with a checkpoint.

    The handlers are installed when the sanity check starts (after Lightning registered its own SIGTERM
    handling, which would only stop at the end of the epoch; they replace it) and restored when ``fit`` ends. On
    a signal the run finishes the step it is in (or the validation that is running), writes ``last.ckpt`` of
    that step (the same state a periodic checkpoint holds, so a resume is exact) and ``metrics.json``, and
    raises :class:`TrainingInterrupted`. A signal during the sanity check (no step taken yet) stops at the end of
    the current sanity batch and saves nothing (``TrainingInterrupted`` with ``step=None``). Under DDP the
    ranks agree on the step to stop at (one all-reduce of a flag per step).
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: Dict[int, Any] = {}
        self.checkpoint: Optional[Path] = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            print(
                f"\nreceived {signal.Signals(signum).name}: stopping after the current step (saving a checkpoint)",
                file=sys.stderr,
                flush=True,
            )

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread (e.g. under a notebook's worker thread)
        for sig in STOP_SIGNALS:
            prev = signal.signal(sig, self._handler)
            self._previous.setdefault(sig, prev)

    def _restore(self) -> None:
        for sig, prev in self._previous.items():
            try:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._previous = {}

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None
        self._install()

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.sanity_checking and self.received is not None:
            raise TrainingInterrupted(self.received, None)  # before the first step: nothing to save

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._previous:  # no sanity check ran
            self.received = None
            self._install()
        elif self.received is not None:
            raise TrainingInterrupted(self.received, None)  # arrived at the very end of the sanity check

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        stop = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        ckpt_dir = _checkpoint_dir(trainer)
        if ckpt_dir is not None:
            self.checkpoint = ckpt_dir / "last.ckpt"
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
        summary = _find(trainer, RunSummary)
        if summary is not None:
            summary.extra["interrupted"] = {
                "signal": signal.Signals(self.received).name if self.received else "peer",
                "step": trainer.global_step,
                "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            }
            summary.write(trainer, pl_module)
        raise TrainingInterrupted(self.received or signal.SIGTERM, trainer.global_step, self.checkpoint)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
        if self.received is not None and not isinstance(exception, TrainingInterrupted):
            # Lightning stopped on its own (its SIGTERM during a validation): no checkpoint of this step
            summary = _find(trainer, RunSummary)
            if summary is not None:
                summary.extra["interrupted"] = {
                    "signal": signal.Signals(self.received).name,
                    "step": trainer.global_step,
                    "checkpoint": None,
                }
                summary.write_quietly(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()


# --- logs and predictions ------------------------------------------------------------------------------------
class AppendingCSVLogger(Logger):
    """``<save_dir>/<name>/metrics.csv`` (Lightning's ``CSVLogger`` layout: one row per logged step, a ``step``
    column, the header the union of the keys) that a resumed run continues.

    Lightning's own ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, which loses a resumed
    run's history; this logger keeps it. With ``resume_step`` (the ``global_step`` of the checkpoint a run
    resumes from) the rows logged at that step or later are dropped once, when the logger starts: those steps
    are replayed, so each appears once (Lightning logs the metrics of the step that makes ``global_step`` reach
    ``s + 1`` with ``step=s``). Rows are buffered and appended every ``flush_logs_every_n_steps`` rows and at
    the end; a new column rewrites the file (atomically) with the wider header.
    """

    NAME_METRICS_FILE = "metrics.csv"

    def __init__(
        self,
        save_dir: Union[str, Path],
        name: str = "csv",
        resume_step: Optional[int] = None,
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__()
        self._save_dir = str(save_dir)
        self._name = name
        self.resume_step = resume_step
        self.flush_logs_every_n_steps = max(1, int(flush_logs_every_n_steps))
        self._rows: List[Dict[str, Any]] = []
        self._keys: Optional[List[str]] = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return str(Path(self._save_dir) / self._name)

    @property
    def metrics_file_path(self) -> Path:
        return Path(self.log_dir) / self.NAME_METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run folder's config.yaml records the settings

    @rank_zero_only
    def log_metrics(self, metrics: Dict[str, float], step: Optional[int] = None) -> None:
        row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}
        row["step"] = int(step) if step is not None else len(self._rows)
        self._rows.append(row)
        if len(self._rows) >= self.flush_logs_every_n_steps:
            self.save()

    def _open(self) -> None:
        """Read the existing file once: its header, and (on resume) drop the rows of the replayed steps."""
        path = self.metrics_file_path
        self._keys = []
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            self._keys = list(reader.fieldnames or [])
            rows = list(reader)
        if self.resume_step is None:
            return

        def before_resume(row: Dict[str, str]) -> bool:
            try:
                return int(float(row.get("step") or "")) < int(self.resume_step)
            except ValueError:
                return False  # a row a kill cut short

        kept = [r for r in rows if before_resume(r)]
        if len(kept) != len(rows):
            self._write_all(kept)

    def _write_all(self, rows: List[Dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._keys or ["step"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(buf.getvalue(), self.metrics_file_path)

    @rank_zero_only
    def save(self) -> None:
        if self._keys is None:
            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            self._open()
        if not self._rows:
            return
        assert self._keys is not None
        new = sorted({k for r in self._rows for k in r} - set(self._keys))
        path = self.metrics_file_path
        if new or not path.is_file():
            old: List[Dict[str, Any]] = []
            if path.is_file():
                with open(path, newline="") as f:
                    old = list(csv.DictReader(f))
            self._keys = sorted(set(self._keys) | set(new))
            _write_output(path, lambda: self._write_all(old + self._rows))
        else:
            buf = io.StringIO()
            csv.DictWriter(buf, fieldnames=self._keys, extrasaction="ignore").writerows(self._rows)
            _write_output(path, lambda: append_text(buf.getvalue(), path))  # whole rows or none
        self._rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


class PredictionWriter(BasePredictionWriter):
    """The predictions of ``predict`` (the module's ``predict_step``: per image its path and the top-k
    ``{"index", "name", "prob"}``) as one JSON file, written atomically at the end (``output`` is printed)."""

    def __init__(self, output: Optional[Union[str, Path]] = None) -> None:
        super().__init__(write_interval="epoch")
        self.output = Path(output) if output is not None else None
        self.written: Optional[Path] = None

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        rows = [r for batch in predictions for r in (batch or [])]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: List[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = list({r["path"]: r for part in gathered for r in part}.values())  # the sampler pads with repeats
        if self.output is None or not trainer.is_global_zero:
            return
        write_json_atomic(
            {"checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None, "predictions": rows}, self.output
        )
        self.written = self.output
        print(f"wrote {len(rows)} predictions to {self.output}", flush=True)
