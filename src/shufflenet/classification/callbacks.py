"""Callbacks and plugins of a training run: everything a run does besides the steps themselves.

They work in any ``Trainer`` (``classification/train.py`` passes them through LightningCLI's
``trainer_defaults``); paths default to ``trainer.default_root_dir`` (the run folder under the CLI):

* :class:`AtomicCheckpointIO`: checkpoints appear whole or not at all.
* :class:`RunSummary`: the run's metric history (kept in checkpoints), ``metrics.json`` and ``curves.png``.
* :class:`FinishTraining`: at the end of ``fit`` (``on_train_end``, while the model is still on its device):
  ``checkpoints/last.ckpt`` of the final step, BN recalibration (the module's ``bn_recalibration_batches``),
  validation of the final weights, the DDP replica check, ``model.pth``, and ``checkpoints/best.ckpt``
  (a copy of ``last.ckpt`` when no validation ran, said on the terminal).
* :class:`StopOnSignal`: SIGTERM, SIGINT and SIGUSR1 (SLURM's pre-emption warning) end the run at the end of
  the current training step with ``checkpoints/last.ckpt`` of that step and ``metrics.json``, then raise
  :class:`~shufflenet.classification.errors.TrainingInterrupted` (the CLI prints the resume command and exits
  with 143). Resuming from that checkpoint gives the uninterrupted run's weights bit for bit.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..fileio import atomic_write, tmp_sibling, write_json_atomic
from ..weights import atomic_torch_save, save_weights
from .errors import TrainingInterrupted

log = logging.getLogger(__name__)

__all__ = [
    "AtomicCheckpointIO",
    "RunSummary",
    "FinishTraining",
    "StopOnSignal",
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
    """

    def save_checkpoint(self, checkpoint: Dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


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
        write_json_atomic(self.summary(trainer, pl_module), run_dir / "metrics.json")
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


class FinishTraining(pl.Callback):
    """The end of a successful ``fit``, in order (``on_train_end``; an interrupted run does none of it):

    1. ``last.ckpt`` of the final step (Lightning does not checkpoint when ``max_steps`` ends the run between
       validations; a resume from it stops at once);
    2. BN recalibration over ``bn_recalibration_batches`` training batches (the module's hyper-parameter, or
       ``num_batches`` given here), averaged over the DDP ranks;
    3. validation of the final weights when the last validation was not at the final step or BN changed;
    4. the DDP replica check (parameter digests of every rank);
    5. ``model.pth`` (``export=True``): the validated weights (EMA if used) as a package weights file;
    6. ``best.ckpt``: when no validation ran, a copy of ``last.ckpt`` (said on the terminal);
    7. ``metrics.json`` and ``curves.png`` through :class:`RunSummary` (when the Trainer has one).
    """

    def __init__(self, export: bool = True, num_batches: Optional[int] = None, run_dir: Optional[Path] = None) -> None:
        self.export = export
        self.num_batches = num_batches
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.results: Dict[str, Any] = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        summary = _find(trainer, RunSummary)
        extra: Dict[str, Any] = {}
        ckpt_dir = _checkpoint_dir(trainer)
        last = ckpt_dir / "last.ckpt" if ckpt_dir is not None else None
        if last is not None:
            trainer.save_checkpoint(last, weights_only=False)

        n = int(
            self.num_batches if self.num_batches is not None else pl_module.hparams.get("bn_recalibration_batches", 0)
        )
        target = pl_module.eval_model() if hasattr(pl_module, "eval_model") else pl_module
        device = pl_module.device
        dm = trainer.datamodule
        if n > 0:
            loader = dm.train_dataloader() if dm is not None else trainer.train_dataloader
            used = recalibrate_bn(target, (b[0].to(device) for b in loader), n)
            if trainer.world_size > 1:  # average the per-rank estimates
                for m in target.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.running_mean.copy_(trainer.strategy.reduce(m.running_mean, reduce_op="mean"))
                        m.running_var.copy_(trainer.strategy.reduce(m.running_var, reduce_op="mean"))
            extra["bn_recalibrated_batches"] = used

        history = summary.history["val"] if summary is not None else []
        if n > 0 or not history or history[-1]["step"] != trainer.global_step:
            loader = dm.val_dataloader() if dm is not None else trainer.val_dataloaders
            num_classes = int(pl_module.hparams.get("num_classes"))
            metrics = validate_weights(target, loader if loader is not None else [], num_classes, device)
            if metrics:
                row = {"step": trainer.global_step, "epoch": trainer.current_epoch, **metrics}
                if n > 0:
                    extra["final_val"] = row
                elif summary is not None:
                    summary.history["val"].append(row)
                self.results["final_val"] = row

        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            digests: List[Optional[str]] = [None] * trainer.world_size
            torch.distributed.all_gather_object(digests, parameter_digest(pl_module.model))
            extra["replica_param_sha256"] = digests
            extra["replicas_identical"] = len(set(digests)) == 1
            if not extra["replicas_identical"]:
                log.error("DDP replicas diverged: parameter digests %s", digests)

        run_dir = _run_dir(trainer, self.run_dir)
        if trainer.is_global_zero and self.export:
            s = summary.summary(trainer, pl_module) if summary is not None else {}
            meta = {
                "source": "shufflenet.classification (classification/train.py)",
                "run_dir": str(run_dir),
                "global_step": trainer.global_step,
                "ema": getattr(pl_module, "model_ema", None) is not None,
                "classes": list(getattr(dm, "classes", []) or []),
                "val": extra.get("final_val") or s.get("last_val"),
                "eval_transform": {
                    "image_size": dm.hparams.get("image_size"),
                    "resize_size": dm.hparams.get("resize_size"),
                }
                if dm is not None
                else None,
            }
            save_weights(target, run_dir / "model.pth", arch=pl_module.hparams.get("arch"), meta=meta)
            extra["exported_weights"] = str(run_dir / "model.pth")

        if trainer.is_global_zero and last is not None and last.is_file() and not (ckpt_dir / "best.ckpt").is_file():
            tmp = tmp_sibling(ckpt_dir / "best.ckpt")
            try:
                shutil.copyfile(last, tmp)
                tmp.replace(ckpt_dir / "best.ckpt")
            finally:
                tmp.unlink(missing_ok=True)
            extra["best_is_last"] = True
            print(f"no validation ran during training: {ckpt_dir / 'best.ckpt'} is a copy of last.ckpt", flush=True)

        self.results.update(extra)
        if summary is not None:
            summary.extra.update(extra)
            summary.write(trainer, pl_module)


class StopOnSignal(pl.Callback):
    """SIGTERM / SIGINT / SIGUSR1 end the run at the end of the current training step, with a checkpoint.

    The handlers are installed when training starts (after the sanity check; they replace Lightning's SIGTERM
    handling, which would only stop at the end of the epoch) and restored when it ends. On a signal the run finishes the step it is in
    (or the validation that is running), writes ``last.ckpt`` of that step (the same state a periodic
    checkpoint holds, so a resume is exact) and ``metrics.json``, and raises :class:`TrainingInterrupted`.
    Under DDP the ranks agree on the step to stop at (one all-reduce of a flag per step).
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

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its own SIGTERM handler (which only stops at the end of an epoch); the
        # handlers found here are put back when training ends.
        self.received = None
        self._install()

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

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
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
                summary.write(trainer, pl_module)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
