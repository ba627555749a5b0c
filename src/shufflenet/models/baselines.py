"""The paper's comparison models (Tables 4, 5, 6, 8), registered under the project's one naming scheme.

Table 4 ("units at equal complexity") -- ``skeleton_{unit}_{mflops}m``
    The Table-1 skeleton (3x3/2 stem conv + BN + ReLU, 3x3/2 max pool, stages 2-4 of [4, 8, 4] units
    whose first unit has stride 2, global average pool, FC) with the stage units replaced:

    * ``vgg``      -- two 3x3 conv + BN + ReLU; the first conv of a stage has stride 2. No shortcut.
    * ``resnet``   -- ResNet bottleneck, ratio 1:4 (1x1 -> 3x3 -> 1x1, mid = out / 4); the stride sits on
      the 3x3 conv and the first unit of a stage has ResNet's projection shortcut (1x1/2 conv + BN).
    * ``resnext``  -- the same bottleneck with cardinality 16 and ratio 1:2 (mid = out / 2 rounded to
      the nearest multiple of 16, at least 16; the 3x3 conv has 16 groups).
    * ``xception`` -- "Xception-like" is ShuffleNet with g = 1 (the paper's definition): it *is*
      :class:`~shufflenet.models.shufflenet.ShuffleNetV1` with ``groups=1`` at 1x / 0.5x / 0.25x.

    Stage widths (stage 2 : 3 : 4 = 1 : 2 : 4 as in Table 1) were chosen so the multiply-adds are
    within 5 % of the paper's 140 / 38 / 13 MFLOPs (VGG-like at 140 only, the paper reports it only
    there); the stem follows the ShuffleNet width rule of the same complexity (24 channels at 140
    MFLOPs, 12 at 38 and 13 MFLOPs). The widths are in :data:`SKELETON_WIDTHS` and printed by
    ``python -m shufflenet.complexity``; ``python -m shufflenet.complexity --fit-skeleton resnet 38``
    redoes the search. At 38 MFLOPs this gives the paper's stage-4 widths for VGG-like (50) and
    ResNet (192) exactly; ResNeXt lands at 188 (the paper: 192) because its 1:2 bottleneck, rounded to
    16 groups, costs more than ResNet's at equal width.

Table 5/6/8 -- ``mobilenet_v1_x{0_25,0_5,0_75,1_0}`` and ``alexnet``
    MobileNet v1 is timm's (``mobilenetv1_100`` at other channel multipliers; 41.0 / 149.5 / 325.4 /
    568.7 MFLOPs, the MobileNet paper's 41 / 149 / 325 / 569). AlexNet is torchvision's, the
    single-tower "one weird trick" variant (conv widths 64-192-384-256-256): 714.2 MFLOPs against the
    paper's 720 for the original two-tower net (96-256-384-384-256, grouped conv2/4/5, 724.3 MFLOPs
    by the same count); -0.8 %, inside the 3 % bound, so the paper's AlexNet rows are compared to it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import width_tag
from .paper import TABLE4_UNITS
from .registry import _TIMM_CFG, ModelSpec, register
from .shufflenet import (
    DEFAULT_STAGE_REPEATS,
    InvalidConfigError,
    ShuffleNetV1,
    SkeletonClassifier,
    nearest_multiple,
    skeleton_feature_info,
)

__all__ = [
    "SKELETON_UNITS",
    "SKELETON_WIDTHS",
    "SkeletonNet",
    "VGGUnit",
    "BottleneckUnit",
    "skeleton",
    "mobilenet_v1",
    "alexnet",
]

#: Units of Table 4 built by :class:`SkeletonNet` (``xception`` is ShuffleNetV1 with groups=1).
SKELETON_UNITS = ("vgg", "resnet", "resnext")
RESNEXT_CARDINALITY = 16

#: Table 4 widths: {(unit, target MFLOPs): (stem, (stage2, stage3, stage4))}. Found with
#: ``python -m shufflenet.complexity --fit-skeleton UNIT TARGET`` (closest 1:2:4 widths to the target).
SKELETON_WIDTHS: Dict[tuple, tuple] = {
    ("vgg", 140): (24, (25, 50, 100)),
    ("resnet", 140): (24, (96, 192, 384)),
    ("resnet", 38): (12, (48, 96, 192)),
    ("resnet", 13): (12, (24, 48, 96)),
    ("resnext", 140): (24, (88, 176, 352)),
    ("resnext", 38): (12, (47, 94, 188)),
    ("resnext", 13): (12, (23, 46, 92)),
}
#: Xception-like = ShuffleNet g=1 at the width multiplier of the same complexity.
XCEPTION_WIDTH_MULT = {140: 1.0, 38: 0.5, 13: 0.25}

_TIMM_CALL_KEYS = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def _drop_timm_call_kwargs(kwargs: Dict[str, Any], keep_given: bool = True) -> Dict[str, Any]:
    """Remove what ``timm.create_model`` passes to every entrypoint (``pretrained``; ``pretrained_cfg``... when
    None, or always with ``keep_given=False`` for builders that take none of them)."""
    kwargs.pop("pretrained", None)
    for key in _TIMM_CALL_KEYS:
        if not keep_given or kwargs.get(key) is None:
            kwargs.pop(key, None)
    return kwargs


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> List[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class VGGUnit(nn.Sequential):
    """VGG-like unit of Table 4: two 3x3 conv + BN + ReLU (the first one carries the stride)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            *_conv_bn_relu(in_channels, out_channels, 3, stride),
            *_conv_bn_relu(out_channels, out_channels, 3),
        )


class BottleneckUnit(nn.Module):
    """ResNet / ResNeXt bottleneck: 1x1 -> 3x3 (``groups``, stride) -> 1x1, each with BN; ReLU after the add.

    The shortcut is the identity, or ResNet's projection (1x1 conv with the unit's stride + BN) where
    the shape changes. ``mid_channels`` must be divisible by ``groups``.
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int, stride: int = 1, groups: int = 1):
        super().__init__()
        if mid_channels % groups:
            raise InvalidConfigError(f"BottleneckUnit: mid_channels={mid_channels} is not divisible by groups={groups}")
        self.conv1 = nn.Sequential(*_conv_bn_relu(in_channels, mid_channels, 1))
        self.conv2 = nn.Sequential(*_conv_bn_relu(mid_channels, mid_channels, 3, stride, groups))
        self.conv3 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.conv3(self.conv2(self.conv1(x))), inplace=True)


def _make_unit(unit: str, cin: int, cout: int, stride: int) -> nn.Module:
    if unit == "vgg":
        return VGGUnit(cin, cout, stride)
    if unit == "resnet":
        if cout % 4:
            raise InvalidConfigError(f"resnet skeleton: stage width {cout} is not divisible by 4 (ratio 1:4)")
        return BottleneckUnit(cin, cout, cout // 4, stride)
    if unit == "resnext":
        mid = nearest_multiple(cout / 2, RESNEXT_CARDINALITY)
        return BottleneckUnit(cin, cout, mid, stride, groups=RESNEXT_CARDINALITY)
    raise InvalidConfigError(f"unknown skeleton unit {unit!r}; valid units: {', '.join(SKELETON_UNITS)}")


class SkeletonNet(SkeletonClassifier):
    """The Table-1 skeleton with stage units of another kind (Table 4).

    Same layout and API as :class:`ShuffleNetV1`: children ``conv1``, ``maxpool``, ``stage2``-``stage4``,
    ``fc``; ``feature_info``, ``forward_features``, ``forward_head``, ``reset_classifier``, ``config``.

    Args:
        unit: ``"vgg"``, ``"resnet"`` or ``"resnext"``.
        stage_out_channels: output widths of stages 2, 3, 4.
        stem_channels: width of the 3x3/2 stem conv.
        stage_repeats: units per stage.
    """

    def __init__(
        self,
        unit: str,
        stage_out_channels: Sequence[int],
        stem_channels: int = 24,
        stage_repeats: Sequence[int] = DEFAULT_STAGE_REPEATS,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if unit not in SKELETON_UNITS:
            raise InvalidConfigError(
                f"unknown skeleton unit {unit!r}; valid units: {', '.join(SKELETON_UNITS)} "
                f"(Xception-like is ShuffleNetV1(groups=1))"
            )
        out = [int(c) for c in stage_out_channels]
        repeats = [int(r) for r in stage_repeats]
        if len(out) != 3 or min(out) < 1 or len(repeats) != 3 or min(repeats) < 1:
            raise InvalidConfigError(
                f"stage_out_channels and stage_repeats need three positive entries, got {out} and {repeats}"
            )
        if global_pool not in ("avg", ""):
            raise InvalidConfigError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.unit = unit
        self.stem_channels = int(stem_channels)
        self.stage_out_channels = tuple(out)
        self.stage_repeats = tuple(repeats)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.num_features = out[-1]

        self.conv1 = nn.Sequential(*_conv_bn_relu(in_chans, self.stem_channels, 3, 2))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = self.stem_channels
        for i, (cout, n) in enumerate(zip(out, repeats)):
            units = [_make_unit(unit, cin if j == 0 else cout, cout, 2 if j == 0 else 1) for j in range(n)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            cin = cout
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = skeleton_feature_info(self.stem_channels, out)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv1(x))
        return self.stage4(self.stage3(self.stage2(x)))

    def config(self) -> Dict[str, Any]:
        return dict(
            unit=self.unit,
            stage_out_channels=list(self.stage_out_channels),
            stem_channels=self.stem_channels,
            stage_repeats=list(self.stage_repeats),
            num_classes=self.num_classes,
        )


def skeleton(unit: str, stage_out_channels: Sequence[int], stem_channels: int = 24, **kwargs: Any) -> SkeletonNet:
    """Build a :class:`SkeletonNet` through timm (so ``features_only=True`` works as for ShuffleNet)."""
    from timm.models import build_model_with_cfg

    _drop_timm_call_kwargs(kwargs)
    kwargs.setdefault("pretrained_cfg", _TIMM_CFG)
    return build_model_with_cfg(
        SkeletonNet,
        f"skeleton_{unit}",
        pretrained=False,
        feature_cfg=dict(out_indices=(1, 2, 3)),
        unit=unit,
        stage_out_channels=stage_out_channels,
        stem_channels=stem_channels,
        **kwargs,
    )


def mobilenet_v1(width_mult: float = 1.0, **kwargs: Any) -> nn.Module:
    """MobileNet v1 (Howard et al. 2017) at channel multiplier ``width_mult``: timm's ``mobilenetv1_100``
    generator (depthwise-separable blocks, ReLU6, BN) with another multiplier. Accepts timm kwargs
    (``num_classes``, ``features_only``, ``drop_rate``...)."""
    try:
        from timm.models.efficientnet import _gen_mobilenet_v1
    except ImportError as e:  # pragma: no cover - guards a timm upgrade past the pinned version
        raise ImportError(
            "mobilenet_v1 needs timm's MobileNet v1 generator (timm.models.efficientnet._gen_mobilenet_v1, "
            "present in the pinned timm==1.0.29)"
        ) from e
    _drop_timm_call_kwargs(kwargs)
    cfg = dict(_TIMM_CFG, first_conv="conv_stem", classifier="classifier")
    kwargs.setdefault("pretrained_cfg", cfg)
    return _gen_mobilenet_v1(f"mobilenet_v1_x{width_tag(width_mult)}", width_mult, pretrained=False, **kwargs)


def alexnet(num_classes: int = 1000, **kwargs: Any) -> nn.Module:
    """torchvision's AlexNet (single-tower variant); no pretrained weights (nothing is downloaded)."""
    import torchvision

    _drop_timm_call_kwargs(kwargs, keep_given=False)
    if kwargs.pop("features_only", False):
        raise ValueError("alexnet: features_only is not supported (use model.features)")
    return torchvision.models.alexnet(weights=None, num_classes=num_classes, **kwargs)


def _register_baselines() -> None:
    """The comparison models; the paper's figures for each name come from the registry's one reading of the tables
    (:func:`~shufflenet.models.registry.paper_entries`)."""
    column = {unit: col for col, unit in TABLE4_UNITS.items()}
    for (unit, target), (stem, widths) in SKELETON_WIDTHS.items():
        register(
            ModelSpec(
                name=f"skeleton_{unit}_{target}m",
                family="skeleton",
                builder=skeleton,
                kwargs=dict(unit=unit, stage_out_channels=tuple(widths), stem_channels=stem),
                description=f"Table 4: {column[unit]} units in the Table-1 skeleton at ~{target} MFLOPs, "
                f"stem {stem}, stage widths {'/'.join(map(str, widths))}",
            )
        )
    for target, width in XCEPTION_WIDTH_MULT.items():
        register(
            ModelSpec(
                name=f"skeleton_xception_{target}m",
                family="skeleton",
                builder=ShuffleNetV1,
                kwargs=dict(groups=1, width_mult=width),
                description=f"Table 4: Xception-like units (= ShuffleNet {width:g}x, g=1) at ~{target} MFLOPs",
            )
        )
    for width in (0.25, 0.5, 0.75, 1.0):
        register(
            ModelSpec(
                name=f"mobilenet_v1_x{width_tag(width)}",
                family="mobilenet_v1",
                builder=mobilenet_v1,
                kwargs=dict(width_mult=width),
                description=f"{width:.1f} MobileNet-224 (timm's MobileNet v1, channel multiplier {width:g})"
                if width == 1
                else f"{width:g} MobileNet-224 (timm's MobileNet v1, channel multiplier {width:g})",
            )
        )
    register(
        ModelSpec(
            name="alexnet",
            family="alexnet",
            builder=alexnet,
            description="AlexNet (torchvision's single-tower variant; Tables 6 and 8)",
        )
    )


_register_baselines()


# --- megvii-style peer (Table 8 latency comparison) -------------------------------------------------------------
# The same ShuffleNet modules run in the order and style of megvii's published ShuffleNet v1 code, to time how much
# the code structure (not the network) costs. Built from an existing model's units; not registered.

from torch import cat  # noqa: E402

from .shufflenet import ShuffleUnit  # noqa: E402

__all__ += ["MegviiStyleUnit", "megvii_style"]


class MegviiStyleUnit(nn.Module):
    """A comparison peer for the latency table: one of *our* :class:`ShuffleUnit`'s modules, run megvii-style.

    Same convolutions and weights, but the channel shuffle sits after the depthwise conv + BN and is a
    reshape -> permute -> reshape (the pattern of megvii's published ShuffleNet v1 code), and the
    stride-2 ReLU is applied to the branch only. Not a registered model; not numerically the same network
    (the shuffle's position differs), the same FLOPs and parameters.
    """

    def __init__(self, unit: ShuffleUnit) -> None:
        super().__init__()
        self.gconv1, self.dwconv, self.gconv2, self.shortcut = unit.gconv1, unit.dwconv, unit.gconv2, unit.shortcut
        self.stride = unit.stride
        self.groups = unit.shuffle.groups  # 1: no shuffle (first unit of stage 2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.dwconv(F.relu(self.gconv1(x)))
        if self.groups > 1:
            b, c, h, w = out.shape
            out = out.reshape(b, c // self.groups, self.groups, h, w).permute(0, 2, 1, 3, 4).reshape(b, c, h, w)
        out = self.gconv2(out)
        if self.stride == 2:
            return cat((self.shortcut(x), F.relu(out)), 1)
        return F.relu(x + out)


def megvii_style(model: ShuffleNetV1) -> ShuffleNetV1:
    """Swap every unit of ``model`` (in place) for a :class:`MegviiStyleUnit` over the same modules."""
    for stage in model.stages():
        for i, unit in enumerate(list(stage)):
            stage[i] = MegviiStyleUnit(unit)
    return model
