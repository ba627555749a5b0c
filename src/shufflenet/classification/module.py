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

Fine-tuning (``weights=``, ``--model.weights``): ``DEFAULT`` / a weights name (published ImageNet weights,
downloaded once) or a file (a ``model.pth``, a ``.ckpt``, a converted or original public checkpoint), read by the
package's one weights reader. The backbone is loaded; the classifier too when the class counts agree, else it is
re-initialised as the architecture initialises it (timm's ``num_classes=N`` with ``pretrained=True``).
:attr:`ImageClassifier.weights_report` says what was loaded in one line; checkpoints keep it under
``pretrained_weights`` and store ``weights: null`` among their hyper-parameters, so loading a checkpoint (a
resume, ``load_from_checkpoint``, ``validate --ckpt_path``) restores its own weights and never reads the
published ones again.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..fileio import sha256_file
from ..models import create_model, model_from_weights
from ..models.pretrained import weights_file
from .callbacks import recalibrate_bn
from .errors import ClassificationError
from .predict import top_k_rows

log = logging.getLogger(__name__)

__all__ = ["ImageClassifier", "pretrained_backbone", "recalibrate_bn"]


def pretrained_backbone(
    arch: str, weights: str, num_classes: int, model_kwargs: Optional[Dict[str, Any]] = None
) -> Tuple[nn.Module, Dict[str, Any]]:
    """``arch`` with the weights ``weights`` names, for ``num_classes`` classes, and what was loaded.

    The file's network is built and loaded strictly by the package's weights reader (a file of another network
    is refused there); when its class count differs from ``num_classes`` the classifier is replaced by a freshly
    initialised one of ``arch`` (the architecture's own initialisation). The report: ``source`` (the file read),
    ``sha256``, ``tensors_loaded`` / ``tensors`` (state-dict entries taken from the file / in the model),
    ``head`` (``kept`` or ``re-initialised``), ``file_classes`` and ``line`` (all of it in one line).
    """
    kwargs = dict(model_kwargs or {})
    wf = weights_file(weights, arch)
    net = model_from_weights(wf, arch, **kwargs)
    theirs = wf.num_classes
    total = len(net.state_dict())
    head = "kept"
    if theirs != num_classes:
        if not hasattr(net, "reset_classifier"):
            raise ClassificationError(
                f"model.weights {weights}: {arch} cannot replace its classifier ({theirs} classes in the file, "
                f"{num_classes} in this run)"
            )
        fresh = create_model(arch, num_classes=num_classes, **kwargs)
        net.reset_classifier(num_classes)
        net.get_classifier().load_state_dict(fresh.get_classifier().state_dict())
        head = "re-initialised"
    own = net.state_dict()
    head_keys = {f"{name}.{k}" for name, m in net.named_modules() if m is net.get_classifier() for k in m.state_dict()}
    loaded = total - (len(head_keys) if head != "kept" else 0)
    sha = sha256_file(wf.path)
    classes = f"{theirs} -> {num_classes} classes" if head != "kept" else f"{num_classes} classes"
    line = (
        f"model.weights {weights}: loaded {loaded}/{len(own)} tensors of {arch} from {wf.path} (sha256 {sha[:12]}); "
        f"classifier {head} ({classes})"
    )
    return net, {
        "weights": str(weights),
        "source": str(wf.path),
        "sha256": sha,
        "tensors_loaded": loaded,
        "tensors": len(own),
        "head": head,
        "file_classes": theirs,
        "line": line,
    }


class ImageClassifier(pl.LightningModule):
    """ImageNet classification with any registered model (``arch``; the paper's recipe trains
    ``shufflenet_v1_x1_0_g3``, the demo ``shufflenet_v1_x0_25_g3``).

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
        weights: start from these weights (fine-tuning): ``DEFAULT`` or a weights name (the published ImageNet
            weights of ``arch``; their preprocessing becomes ``shufflenet-train``'s default image and resize
            size) or a weights file; the classifier is re-initialised when the class count differs (see the
            module docstring). ``None``: random initialisation.
        channels_last: keep the model (and so its activations) in ``torch.channels_last`` (NHWC), oneDNN's
            fastest layout for the (grouped) convolutions on CPU; same function, faster on CPU.
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
        weights: Optional[str] = None,
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
        #: what ``weights`` loaded (see :func:`pretrained_backbone`; ``line`` says it in one line), else None
        self.weights_report: Optional[Dict[str, Any]] = None
        if weights:
            self.model, self.weights_report = pretrained_backbone(arch, weights, num_classes, model_kwargs)
            log.info(self.weights_report["line"])
        else:
            self.model = create_model(arch, num_classes=num_classes, **(model_kwargs or {}))
        self.model_ema = ModelEmaV3(self.model, decay=ema_decay, use_warmup=ema_warmup) if ema else None
        if self.model_ema is not None:
            self.model_ema.requires_grad_(False)  # updated by averaging, never by the optimizer (nor DDP)
        if channels_last:  # training-speed options
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
        return top_k_rows(paths, probs, self.predict_top_k, self.class_names)

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
        # the checkpoint holds its own weights: loading it must not read model.weights again
        if isinstance(checkpoint.get("hyper_parameters"), dict) and checkpoint["hyper_parameters"].get("weights"):
            checkpoint["hyper_parameters"]["weights"] = None
        if self.weights_report is not None:
            checkpoint["pretrained_weights"] = {k: v for k, v in self.weights_report.items() if k != "line"}
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
