"""The LightningModule: the package's backbone + the paper's training recipe (Sec. 4).

Recipe (all options are constructor arguments, i.e. ``--model.*`` on the command line and ``model:`` in
YAML): SGD with momentum 0.9; learning rate ``lr`` for a global batch of ``lr_reference_batch`` (0.5 at
1024 in the paper), scaled linearly to the actual global batch (``batch_size x processes x
accumulate_grad_batches``); linear decay to 0 over ``trainer.max_steps`` (300k in the paper), optionally
after a linear warmup; weight decay 4e-5. Options of the public reproductions: no weight decay on BN and
bias parameters (timm's ``param_groups_weight_decay``), label smoothing, an EMA of the weights (timm
``ModelEmaV3``; validation and export then use the EMA), and BN-statistics recalibration after training
(:class:`~shufflenet.classification.callbacks.RecalibrateBN`; pass it to a plain ``Trainer`` too).

``predict_step`` returns, per image of an ``(images, paths)`` batch, its path and the ``predict_top_k``
classes with their probabilities (class names from the checkpoint, which records the training set's
class folders).

Checkpoint keys: the backbone is ``self.model`` (keys ``model.*``), the EMA copy ``self.model_ema``
(keys ``model_ema.module.*``); ``arch`` and ``num_classes`` are saved hyperparameters, so
``shufflenet.load_weights`` / ``create_model(arch, weights=...)`` read a ``.ckpt`` directly.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..models import create_model
from .callbacks import recalibrate_bn
from .errors import ClassificationError

log = logging.getLogger(__name__)

__all__ = ["ImageClassifier", "recalibrate_bn"]


class ImageClassifier(pl.LightningModule):
    """ImageNet classification with any registered model (default ShuffleNet 1x, g=3).

    Args:
        arch: registered model name (``shufflenet.list_models()``), e.g. ``shufflenet_v1_x1_0_g3``.
        num_classes: classifier outputs; the CLI links it to the dataset's number of class folders.
        lr: learning rate at a global batch of ``lr_reference_batch`` (linear scaling rule).
        lr_reference_batch: the global batch ``lr`` refers to (1024 in the paper).
        momentum: SGD momentum (0.9).
        nesterov: Nesterov momentum (the paper: plain momentum).
        weight_decay: L2 weight decay (4e-5).
        no_weight_decay_bn_bias: exclude BN and bias parameters (1-D tensors) from weight decay.
        warmup_steps: linear warmup from 0 before the linear decay (0: none, as in the paper).
        label_smoothing: cross-entropy label smoothing (0: none, as in the paper; 0.1 in reproductions).
        ema: keep an exponential moving average of the weights (timm ``ModelEmaV3``).
        ema_decay: EMA decay per optimizer step.
        ema_warmup: timm's EMA warmup (decay ramps up over the first steps).
        bn_recalibration_batches: after training, re-estimate BN statistics over this many training
            batches (0: off). Done by the :class:`~shufflenet.classification.callbacks.RecalibrateBN` callback
            at the end of ``fit`` (before the final validation and the export); ``shufflenet-train`` has it,
            a plain ``Trainer`` needs it in its ``callbacks``.
        model_kwargs: extra keyword arguments of the model builder (e.g. ``drop_rate``).
        channels_last: keep the model (and so its activations) in ``torch.channels_last`` (NHWC), oneDNN's
            fastest layout for the (grouped) convolutions on CPU; same function (``classification/benchmark.py``).
        compile_model: ``torch.compile`` the model in place (``nn.Module.compile``: checkpoint keys unchanged).
    """

    def __init__(
        self,
        arch: str = "shufflenet_v1_x1_0_g3",
        num_classes: int = 1000,
        lr: float = 0.5,
        lr_reference_batch: int = 1024,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 4e-5,
        no_weight_decay_bn_bias: bool = False,
        warmup_steps: int = 0,
        label_smoothing: float = 0.0,
        ema: bool = False,
        ema_decay: float = 0.9999,
        ema_warmup: bool = False,
        bn_recalibration_batches: int = 0,
        model_kwargs: Optional[Dict[str, Any]] = None,
        channels_last: bool = False,
        compile_model: bool = False,
    ) -> None:
        super().__init__()
        for name, value, ok in (
            ("lr", lr, lr > 0),
            ("lr_reference_batch", lr_reference_batch, lr_reference_batch > 0),
            ("momentum", momentum, 0 <= momentum < 1),
            ("weight_decay", weight_decay, weight_decay >= 0),
            ("label_smoothing", label_smoothing, 0 <= label_smoothing < 1),
            ("ema_decay", ema_decay, 0 < ema_decay < 1),
            ("warmup_steps", warmup_steps, warmup_steps >= 0),
        ):
            if not ok:
                raise ClassificationError(f"model.{name}={value!r} is out of range")
        if num_classes < 2:
            raise ClassificationError(f"model.num_classes={num_classes!r}: a classifier needs at least 2 classes")
        self.save_hyperparameters()
        self.model = create_model(arch, num_classes=num_classes, **(model_kwargs or {}))
        self.model_ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=ema_warmup) if ema else None
        if self.model_ema is not None:
            self.model_ema.requires_grad_(False)  # updated by averaging, never by the optimizer (nor DDP)
        if channels_last:  # training-speed options (benchmark: classification/benchmark.py)
            self.model.to(memory_format=torch.channels_last)
            if self.model_ema is not None:
                self.model_ema.to(memory_format=torch.channels_last)
        if compile_model:
            self.model.compile()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        #: class names (the training set's folders, saved in checkpoints); used by ``predict_step``
        self.class_names: Optional[List[str]] = None
        #: how many classes ``predict_step`` returns per image (``shufflenet-train predict --top_k``)
        self.predict_top_k = 5
        top5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    # --- model --------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def eval_model(self) -> nn.Module:
        """The weights that are validated and exported: the EMA copy if enabled, else the model."""
        return self.model_ema.module if self.model_ema is not None else self.model

    # --- steps --------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = self.criterion(logits, y)
        self.train_top1(logits, y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/top1", self.train_top1, on_step=True, on_epoch=False)
        if self.trainer.optimizers:  # the learning rate this step uses
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Once per optimizer step, before any callback sees the batch end (a checkpoint written in
        # on_train_batch_end then holds weights and EMA of the same step).
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.global_step)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        if len(y) == 0:  # every image of the batch was unreadable (skipped and counted)
            return
        logits = self.eval_model()(x)
        loss = F.cross_entropy(logits, y)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True)
        self.log("val/top1", self.val_top1, on_epoch=True, prog_bar=True)
        self.log("val/top5", self.val_top5, on_epoch=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> List[Dict[str, Any]]:
        """Per image of an ``(images, paths)`` batch: ``{"path", "top_k": [{"index", "name", "prob"}, ...]}``."""
        images, paths = batch[0], batch[1]
        if len(paths) == 0:
            return []
        probs = torch.softmax(self.eval_model()(images).float(), dim=1)
        k = max(1, min(int(self.predict_top_k), probs.shape[1]))
        top = probs.topk(k, dim=1)
        names = self.class_names
        out = []
        for path, p, idx in zip(paths, top.values.tolist(), top.indices.tolist()):
            out.append(
                {
                    "path": str(path),
                    "top_k": [
                        {"index": i, "name": names[i] if names and i < len(names) else None, "prob": q}
                        for i, q in zip(idx, p)
                    ],
                }
            )
        return out

    # --- optimization -------------------------------------------------------------------------------
    def global_batch_size(self) -> int:
        dm = getattr(self.trainer, "datamodule", None)
        per_process = getattr(dm, "batch_size", None)
        if per_process is None:
            raise ClassificationError("cannot scale the learning rate: the datamodule has no batch_size")
        return int(per_process) * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def scaled_lr(self) -> float:
        return self.hparams.lr * self.global_batch_size() / self.hparams.lr_reference_batch

    def total_steps(self) -> int:
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps < 0:
            max_steps = int(self.trainer.estimated_stepping_batches)
        return max(1, int(max_steps))

    def configure_optimizers(self) -> Dict[str, Any]:
        hp = self.hparams
        lr = self.scaled_lr()
        optimizer = create_optimizer_v2(
            self.model,
            opt="nesterov" if hp.nesterov else "momentum",  # timm: 'momentum' = SGD without Nesterov
            lr=lr,
            weight_decay=hp.weight_decay,
            momentum=hp.momentum,
            filter_bias_and_bn=hp.no_weight_decay_bn_bias,
        )
        total = self.total_steps()
        warmup = min(hp.warmup_steps, total - 1)
        decay = torch.optim.lr_scheduler.LinearLR(
            optimizer, start_factor=1.0, end_factor=0.0, total_iters=total - warmup
        )
        if warmup > 0:
            ramp = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup
            )
            scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, decay], milestones=[warmup])
        else:
            scheduler = decay
        if self.trainer.is_global_zero:
            log.info(
                "lr %.4g (= %g x global batch %d / %d), linear decay to 0 over %d steps%s",
                lr,
                hp.lr,
                self.global_batch_size(),
                hp.lr_reference_batch,
                total,
                f" after {warmup} warmup steps" if warmup else "",
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        names = self.class_names
        if names is None and dm is not None and getattr(dm, "train_set", None) is not None:
            names = getattr(dm, "classes", None)  # the data module's, for folders and shards alike
        if names is not None:
            checkpoint["class_names"] = list(names)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if checkpoint.get("class_names"):
            self.class_names = list(checkpoint["class_names"])
        hp = checkpoint.get("hyper_parameters", {})
        sd = checkpoint.get("state_dict", {})
        theirs = hp.get("num_classes")
        fc = [v for k, v in sd.items() if k.startswith("model.") and k.endswith(".weight") and v.ndim == 2]
        if theirs is None and fc:
            theirs = int(fc[-1].shape[0])
        if theirs is not None and int(theirs) != self.hparams.num_classes:
            raise ClassificationError(
                f"checkpoint has {theirs} classes but this run has {self.hparams.num_classes} (from the dataset's "
                f"class folders); use a dataset with the same classes, or start without --ckpt_path"
            )
        if hp.get("arch") not in (None, self.hparams.arch):
            raise ClassificationError(
                f"checkpoint was trained with model.arch={hp['arch']} but this run has model.arch={self.hparams.arch}"
            )
        ema_keys = any(k.startswith("model_ema.") for k in sd)
        if ema_keys != (self.model_ema is not None):
            raise ClassificationError(
                f"checkpoint {'has' if ema_keys else 'has no'} EMA weights but this run has model.ema="
                f"{self.model_ema is not None}; resume with the same model.ema setting"
            )
