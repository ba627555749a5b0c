"""Callbacks and plugins of a training run: atomic checkpoints, metrics JSON and the curves PNG."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import _is_local_file_protocol
from torch import nn

from ..fileio import atomic_write, write_json_atomic
from ..weights import atomic_torch_save

log = logging.getLogger(__name__)

__all__ = ["AtomicCheckpointIO", "RunSummary", "plot_curves", "parameter_digest"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes local checkpoints to a temporary file in the same folder, fsyncs it, then ``os.replace``\\ s.

    A process killed at any moment (SIGKILL included) leaves either the previous ``last.ckpt`` or the new
    one, never a truncated file; a stale ``.last.ckpt.*.tmp`` is all a kill can leave behind.
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
        ax_acc.plot([r["step"] for r in train], [100 * r["top1"] for r in train], lw=0.8, alpha=0.5,
                    label="train top-1 (batch)")
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


class RunSummary(pl.Callback):
    """Keeps the run's metric history (saved in checkpoints, so it survives a resume) and writes
    ``metrics.json`` and ``curves.png`` into the run folder after every validation."""

    def __init__(self, run_dir: Path, title: str = "") -> None:
        self.run_dir = Path(run_dir)
        self.title = title
        self.history: Dict[str, List[Dict[str, float]]] = {"train": [], "val": []}
        self.extra: Dict[str, Any] = {}

    # history is part of the checkpoint
    def state_dict(self) -> Dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.history = state_dict.get("history", self.history)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % max(1, trainer.log_every_n_steps) != 0 or (self.history["train"] and self.history["train"][-1]["step"] == step):
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
            "run_dir": str(self.run_dir),
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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.summary(trainer, pl_module), self.run_dir / "metrics.json")
        try:
            plot_curves(self.history, self.run_dir / "curves.png", self.title)
        except Exception as e:  # a plot must never stop training
            log.warning("could not write curves.png: %s", e)
