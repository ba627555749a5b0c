"""ShuffleNet v1 in detectron2: a C4 backbone + stage-4 RoI head, and an FPN backbone.

Both take their layers from the package's one network, :class:`shufflenet.ShuffleNetV1`
(``shufflenet.create_model(MODEL.SHUFFLENET.NAME, num_classes=0)``); nothing here re-implements a
ShuffleNet unit.

* ``build_shufflenet_c4_backbone`` (``MODEL.BACKBONE.NAME``): the network's ``conv1``, ``maxpool``,
  ``stage2`` and ``stage3`` modules; output ``"stage3"`` at stride 16.
* ``ShuffleNetROIHeads`` (``MODEL.ROI_HEADS.NAME``): the C4 RoI head, the way detectron2's
  ``Res5ROIHeads`` runs res5: RoIAlign (14x14, stride 16) -> the network's ``stage4`` module (its first
  unit has stride 2, so 7x7 out) -> global average pool -> box classifier / regressor. The head builds
  the same ``ShuffleNetV1`` from the same config and *moves* its ``stage4`` module in; the rest of that
  network instance is dropped. A classification checkpoint's ``stage4.*`` weights therefore load
  one-to-one into ``roi_heads.stage4.*`` (see :mod:`.checkpoint`).
* ``build_shufflenet_fpn_backbone``: stages 2-4 (strides 8, 16, 32) -> detectron2's ``FPN`` with
  ``LastLevelP6P7`` on P5: outputs p3-p7 (strides 8-128), the anchor range 32-512 of a ResNet FPN.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from detectron2.config import configurable
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import FPN, LastLevelP6P7
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import ROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn

from .. import InvalidConfigError, ShuffleNetV1, UnknownModelError, create_model
from .config import DetectionError

__all__ = [
    "STAGE_NAMES",
    "build_shufflenet",
    "ShuffleNetBackbone",
    "ShuffleNetROIHeads",
    "build_shufflenet_c4_backbone",
    "build_shufflenet_fpn_backbone",
    "apply_norm",
    "feature_shapes",
    "fuse_for_inference",
]


#: Backbone feature names, in order. Channels and strides come from the network's timm ``feature_info``
#: (``shufflenet.models.shufflenet.skeleton_feature_info``), whose ``maxpool`` entry is the ``stem`` here.
STAGE_NAMES = ("stem", "stage2", "stage3", "stage4")
_FEATURE_MODULES = {"stem": "maxpool", "stage2": "stage2", "stage3": "stage3", "stage4": "stage4"}
_NORMS = ("FrozenBN", "BN", "SyncBN")


def feature_shapes(net: ShuffleNetV1) -> Dict[str, ShapeSpec]:
    """``{feature name: ShapeSpec(channels, stride)}`` from ``net.feature_info`` (the one table of strides)."""
    info = {f["module"]: f for f in net.feature_info}
    return {
        name: ShapeSpec(channels=int(info[module]["num_chs"]), stride=int(info[module]["reduction"]))
        for name, module in _FEATURE_MODULES.items()
    }


def build_shufflenet(cfg) -> ShuffleNetV1:
    """The package's network for ``cfg.MODEL.SHUFFLENET`` (no classifier), with clear errors."""
    sc = cfg.MODEL.SHUFFLENET
    options = {"shuffle_inverse": True} if sc.SHUFFLE_INVERSE else {}
    try:
        if sc.NAME:
            net = create_model(sc.NAME, num_classes=0, **options)
        else:
            net = ShuffleNetV1(groups=sc.GROUPS, width_mult=sc.WIDTH_MULT, num_classes=0, **options)
    except (UnknownModelError, InvalidConfigError) as e:
        raise DetectionError(f"MODEL.SHUFFLENET: {e}") from None
    if not isinstance(net, ShuffleNetV1):
        raise DetectionError(
            f"MODEL.SHUFFLENET.NAME={sc.NAME!r} is not a ShuffleNet v1 model "
            f"(see shufflenet.list_models(family='shufflenet'))"
        )
    return net


def apply_norm(module: nn.Module, norm: str) -> nn.Module:
    """Convert the BatchNorm layers of ``module`` for ``MODEL.SHUFFLENET.NORM``; returns the module."""
    if norm == "FrozenBN":
        return FrozenBatchNorm2d.convert_frozen_batchnorm(module)
    if norm == "SyncBN":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if norm == "BN":
        return module
    raise DetectionError(f"MODEL.SHUFFLENET.NORM={norm!r}; expected one of {list(_NORMS)}")


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> nn.Module:
    """Fold every frozen (or eval-mode) BatchNorm that directly follows a convolution in an ``nn.Sequential``
    into that convolution (scaled weights plus a bias), in place; returns ``model``.

    The function is the same up to float rounding (``conv(x) * s + b`` computed as one convolution), and each
    ShuffleNet unit loses three elementwise passes over its activations (a quarter of the C4 RoI head's CPU
    time). For inference and export only: the state dict changes (BN keys go, convolutions get a bias), so
    fuse a copy, not a model you train or checkpoint.
    """
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, bn = module._modules[first], module._modules[second]
            if not isinstance(conv, nn.Conv2d) or not isinstance(bn, (FrozenBatchNorm2d, nn.BatchNorm2d)):
                continue
            if isinstance(bn, nn.BatchNorm2d) and (bn.training or bn.running_var is None):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = bn.bias - bn.running_mean * scale
            if conv.bias is not None:
                bias = bias + conv.bias * scale
            fused = nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                conv.stride,
                conv.padding,
                conv.dilation,
                conv.groups,
                bias=True,
                padding_mode=conv.padding_mode,
            )
            fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
            fused.bias.copy_(bias)
            fused.requires_grad_(False)
            module._modules[first] = fused.to(conv.weight.device)
            module._modules[second] = nn.Identity()
    return model


def _conv_weights_layout(module: nn.Module, channels_last: bool) -> None:
    """Store the convolution weights of ``module`` channels-last (eval) or contiguous (training), in place: the
    same values and Parameter objects (optimizers keep theirs), only the memory layout changes."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and not m.weight.is_contiguous(memory_format=fmt):
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)


class ShuffleNetBackbone(Backbone):
    """Stem and stages of a :class:`ShuffleNetV1` as a detectron2 backbone.

    Args:
        net: the network; its ``conv1``, ``maxpool`` and the stages up to the deepest requested output are
            moved in (deeper stages and the classifier are not kept).
        out_features: names among ``STAGE_NAMES``.
        freeze_at: 0 trains all; 1 freezes the stem; ``k`` in 2..4 the stem and stages 2..k
            (``MODEL.BACKBONE.FREEZE_AT``, as for detectron2's ResNet).
        norm: "FrozenBN", "BN" or "SyncBN" (layers frozen by ``freeze_at`` always get frozen BN).

    ``input_shift`` (a persistent ``(1, 3, 1, 1)`` buffer, zero unless the weights set it) is added to the
    normalized image ahead of the stem, as :class:`shufflenet.models.shufflenet.InputShift` does in the
    classifier: a converted megvii checkpoint's shift loads into it, so its stem sees exactly what it sees
    in the classifier (zero padding = megvii's black), and a detectron2 checkpoint of the trained detector
    carries it.
    """

    def __init__(
        self,
        net: ShuffleNetV1,
        out_features: Sequence[str],
        freeze_at: int = 0,
        norm: str = "FrozenBN",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        out_features = list(out_features)
        bad = [f for f in out_features if f not in STAGE_NAMES]
        if not out_features or bad:
            raise DetectionError(
                f"MODEL.SHUFFLENET.OUT_FEATURES={out_features}: expected names among {list(STAGE_NAMES)}"
            )
        depth = max(STAGE_NAMES.index(f) for f in out_features)
        if not 0 <= freeze_at <= depth + 1:
            raise DetectionError(
                f"MODEL.BACKBONE.FREEZE_AT={freeze_at}: expected 0..{depth + 1} for a backbone that "
                f"ends at {STAGE_NAMES[depth]} (0: train all, 1: stem, k: stem + stages 2..k)"
            )
        shapes = feature_shapes(net)
        shift = net.input_shift.shift.detach().clone() if net.input_shift is not None else torch.zeros(1, 3, 1, 1)
        self.register_buffer("input_shift", shift.reshape(1, -1, 1, 1), persistent=True)
        self.conv1 = net.conv1
        self.maxpool = net.maxpool
        self.stage_names = [n for n in STAGE_NAMES[1 : depth + 1]]
        for name in self.stage_names:
            self.add_module(name, getattr(net, name))
        self._out_features = [n for n in STAGE_NAMES if n in out_features]
        self._out_feature_channels = {n: shapes[n].channels for n in self._out_features}
        self._out_feature_strides = {n: shapes[n].stride for n in self._out_features}
        self.groups = net.groups
        self.width_mult = net.width_mult
        self.shuffle_inverse = net.shuffle_inverse
        #: eval mode runs on channels-last (NHWC) tensors: oneDNN's grouped and depthwise convolutions are
        #: ~1.7x faster so on one CPU thread (same function; outputs are returned in that layout).
        self.channels_last = bool(channels_last)
        apply_norm(self, norm)
        self.freeze(freeze_at)

    def train(self, mode: bool = True) -> ShuffleNetBackbone:
        super().train(mode)
        if self.channels_last:  # eval: NHWC weights for the NHWC activations; training: as built
            _conv_weights_layout(self, not mode)
        return self

    def freeze(self, freeze_at: int = 0) -> ShuffleNetBackbone:
        """Freeze the stem (``freeze_at >= 1``) and stages 2..``freeze_at`` (parameters and BN)."""
        parts = ([self.conv1] if freeze_at >= 1 else []) + [getattr(self, f"stage{k}") for k in range(2, freeze_at + 1)]
        for part in parts:
            for p in part.parameters():
                p.requires_grad_(False)
            FrozenBatchNorm2d.convert_frozen_batchnorm(part)
        return self

    @property
    def size_divisibility(self) -> int:
        # The deepest output's stride: padded inputs give every output exactly input/stride cells, and
        # FPN's 2x top-down upsampling then meets the lateral map at the same size.
        return max(self._out_feature_strides.values())

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        if x.dim() != 4:
            raise ValueError(f"ShuffleNetBackbone takes (N, C, H, W) inputs, got shape {tuple(x.shape)}")
        outputs = {}
        x = x + self.input_shift
        if self.channels_last and not self.training:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.conv1(x))
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }


def _check_cfg(cfg) -> None:
    if cfg.MODEL.SHUFFLENET.NORM not in _NORMS:
        raise DetectionError(f"MODEL.SHUFFLENET.NORM={cfg.MODEL.SHUFFLENET.NORM!r}; expected one of {list(_NORMS)}")


@BACKBONE_REGISTRY.register()
def build_shufflenet_c4_backbone(cfg, input_shape: ShapeSpec) -> ShuffleNetBackbone:
    """C4 backbone: stem + stages 2-3 (stride 16). Stage 4 runs in :class:`ShuffleNetROIHeads`."""
    _check_cfg(cfg)
    if input_shape.channels not in (None, 3):
        raise DetectionError(f"ShuffleNet detectors take 3-channel images, got {input_shape.channels}")
    out_features = cfg.MODEL.SHUFFLENET.OUT_FEATURES
    if "stage4" in out_features:
        raise DetectionError(
            "MODEL.SHUFFLENET.OUT_FEATURES: the C4 backbone ends at stage3 (stage4 runs in the RoI head "
            "ShuffleNetROIHeads); use build_shufflenet_fpn_backbone for stage4 features"
        )
    net = build_shufflenet(cfg)
    return ShuffleNetBackbone(
        net, out_features, cfg.MODEL.BACKBONE.FREEZE_AT, cfg.MODEL.SHUFFLENET.NORM, cfg.MODEL.SHUFFLENET.CHANNELS_LAST
    )


@BACKBONE_REGISTRY.register()
def build_shufflenet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """Stages 2-4 + detectron2's FPN (``MODEL.FPN.*``), P6/P7 from P5: outputs p3-p7."""
    _check_cfg(cfg)
    net = build_shufflenet(cfg)
    bottom_up = ShuffleNetBackbone(
        net,
        cfg.MODEL.SHUFFLENET.OUT_FEATURES,
        cfg.MODEL.BACKBONE.FREEZE_AT,
        cfg.MODEL.SHUFFLENET.NORM,
        cfg.MODEL.SHUFFLENET.CHANNELS_LAST,
    )
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    missing = [f for f in in_features if f not in bottom_up.output_shape()]
    if missing:
        raise DetectionError(
            f"MODEL.FPN.IN_FEATURES={in_features} asks for {missing}, which MODEL.SHUFFLENET.OUT_FEATURES="
            f"{list(cfg.MODEL.SHUFFLENET.OUT_FEATURES)} does not produce"
        )
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelP6P7(out_channels, out_channels, in_feature="p5"),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@ROI_HEADS_REGISTRY.register()
class ShuffleNetROIHeads(ROIHeads):
    """C4 RoI head running ShuffleNet stage 4 on pooled RoI features (as ``Res5ROIHeads`` runs res5).

    Args:
        in_features: the one backbone feature to pool from (``["stage3"]``).
        pooler: RoIAlign over that feature.
        stage4: the network's ``stage4`` module (an ``nn.Sequential`` of ``ShuffleUnit``).
        box_predictor: detectron2's ``FastRCNNOutputLayers`` on the pooled stage-4 output.
        channels_last: in eval mode, run stage 4 on channels-last RoI features (``MODEL.SHUFFLENET.CHANNELS_LAST``).
        roi_chunk: in eval mode, run stage 4 on this many RoIs at a time (``MODEL.SHUFFLENET.ROI_CHUNK_TEST``;
            0: all at once).
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: List[str],
        pooler: ROIPooler,
        stage4: nn.Module,
        box_predictor: nn.Module,
        channels_last: bool = False,
        roi_chunk: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.channels_last = bool(channels_last)
        self.roi_chunk = int(roi_chunk)
        self.in_features = list(in_features)
        self.pooler = pooler
        self.stage4 = stage4
        self.box_predictor = box_predictor

    def _stage4_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 4 and the global average pool over RoI features ``(R, C, h, w)`` -> ``(R, C4)``.

        In eval mode (not while tracing, where the RoI count must stay symbolic) the RoIs go through in chunks
        of ``roi_chunk``: each chunk's activations stay in the CPU caches, which makes stage 4 ~1.6x faster on
        one thread at 300 RoIs; every RoI is computed alone (frozen / eval BN), so the result is the same.
        """
        chunk = self.roi_chunk if not self.training and not torch.jit.is_tracing() else 0
        if chunk <= 0 or x.shape[0] <= chunk:
            if self.channels_last and not self.training:
                x = x.contiguous(memory_format=torch.channels_last)
            return self.stage4(x).mean(dim=(2, 3))
        outs = []
        for part in torch.split(x, chunk):
            if self.channels_last:
                part = part.contiguous(memory_format=torch.channels_last)
            outs.append(self.stage4(part).mean(dim=(2, 3)))
        return torch.cat(outs)

    def train(self, mode: bool = True) -> ShuffleNetROIHeads:
        super().train(mode)
        if self.channels_last:  # eval: NHWC weights for the NHWC RoI features; training: as built
            _conv_weights_layout(self.stage4, not mode)
        return self

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        _check_cfg(cfg)
        if cfg.MODEL.MASK_ON or cfg.MODEL.KEYPOINT_ON:
            raise DetectionError(
                "ShuffleNetROIHeads predicts boxes only (the paper's Faster R-CNN): set MODEL.MASK_ON and "
                "MODEL.KEYPOINT_ON to False"
            )
        ret = super().from_config(cfg)
        in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
        if len(in_features) != 1 or in_features[0] not in input_shape:
            raise DetectionError(
                f"MODEL.ROI_HEADS.IN_FEATURES={in_features}: ShuffleNetROIHeads pools one backbone feature, "
                f"one of {sorted(input_shape)}"
            )
        net = build_shufflenet(cfg)
        feature = input_shape[in_features[0]]
        shapes = feature_shapes(net)
        if feature.channels != shapes["stage3"].channels:
            raise DetectionError(
                f"ShuffleNetROIHeads: feature {in_features[0]!r} has {feature.channels} channels but stage 4 "
                f"of {cfg.MODEL.SHUFFLENET.NAME or 'the configured network'} takes {shapes['stage3'].channels}"
            )
        out_channels = shapes["stage4"].channels
        stage4 = apply_norm(net.stage4, cfg.MODEL.SHUFFLENET.NORM)  # moved from the built network
        del net
        ret["in_features"] = in_features
        ret["pooler"] = ROIPooler(
            output_size=cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION,
            scales=(1.0 / feature.stride,),
            sampling_ratio=cfg.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
            pooler_type=cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        )
        ret["stage4"] = stage4
        ret["channels_last"] = cfg.MODEL.SHUFFLENET.CHANNELS_LAST
        ret["roi_chunk"] = cfg.MODEL.SHUFFLENET.ROI_CHUNK_TEST
        ret["box_predictor"] = FastRCNNOutputLayers(cfg, ShapeSpec(channels=out_channels, height=1, width=1))
        return ret

    def forward(self, images, features, proposals, targets=None):
        del images
        if self.training:
            if not targets:
                raise ValueError("ShuffleNetROIHeads: training needs ground-truth instances")
            proposals = self.label_and_sample_proposals(proposals, targets)
        del targets
        boxes = [p.proposal_boxes for p in proposals]
        x = self.pooler([features[f] for f in self.in_features], boxes)
        predictions = self.box_predictor(self._stage4_pooled(x))
        if self.training:
            return [], self.box_predictor.losses(predictions, proposals)
        instances, _ = self.box_predictor.inference(predictions, proposals)
        return instances, {}
