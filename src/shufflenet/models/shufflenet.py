"""ShuffleNet v1 (Zhang et al., 2017): channel shuffle, the ShuffleNet unit and the network of Table 1.

One compact file, in the manner of torchvision's ``shufflenetv2.py``: the operation, the block, the
network, and the width rule. Everything else in the project (timm registration, the classifier, the
detectron2 backbone, mobile export) wraps :class:`ShuffleNetV1` from here.

Width rule (documented once, used everywhere)
---------------------------------------------
Table 1 gives the 1x output widths of stages 2-4 for each group count ``g``. For a width multiplier
``s`` the widths are::

    out_i  = nearest multiple of g to  table1[g][i] * s          (ties up, at least g)
    mid_i  = nearest multiple of g to  out_i / 4                  (bottleneck = 1/4, ties up, at least g)
    stem   = largest multiple of g not above the nominal stem     (at least g)

with the nominal stem 24 channels, 12 for ``s <= 0.5`` and 48 for ``s >= 2``. Every grouped 1x1
convolution then has input and output widths divisible by ``g`` (the stride-2 unit's residual branch
produces ``out - in`` channels, a difference of two multiples of ``g``). The rule reproduces Table 1
exactly at 1x, megvii's published 0.5x/1x/1.5x/2x widths, and keeps every ShuffleNet row of the paper
within 3 % (per-model tables) or 5 % (Table 2 rows) of the paper's MFLOPs; see
``python -m shufflenet.complexity``. A stem width that the rule would not pick (megvii's g=8 0.5x uses 16)
is set with ``stem_channels``.
"""

import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import ShuffleNetError
from ..weights.io import WeightsFile, load_state_dict_strict
from .names import shufflenet_v1_name
from .pretrained import ShuffleNetWeights, weights_file

__all__ = [
    "channel_shuffle",
    "shuffle_permutation",
    "ChannelShuffle",
    "InputShift",
    "SqueezeExcite",
    "ShuffleUnit",
    "ShuffleNetV1",
    "SkeletonClassifier",
    "skeleton_feature_info",
    "TABLE1_STAGE_WIDTHS",
    "PAPER_GROUPS",
    "stage_widths",
    "InvalidConfigError",
    "ARCH_KEYS",
    "network_differences",
    "shufflenet_v1",
]

#: Table 1 of the paper: output widths of stages 2, 3, 4 at 1x, by number of groups.
TABLE1_STAGE_WIDTHS: Dict[int, tuple] = {
    1: (144, 288, 576),
    2: (200, 400, 800),
    3: (240, 480, 960),
    4: (272, 544, 1088),
    8: (384, 768, 1536),
}
PAPER_GROUPS = tuple(TABLE1_STAGE_WIDTHS)
DEFAULT_STAGE_REPEATS = (4, 8, 4)


class InvalidConfigError(ShuffleNetError, ValueError):
    """A ShuffleNet configuration that cannot be built (raised before any module is created)."""


#: The :meth:`ShuffleNetV1.config` entries that fix which network a state dict fits (the class count aside).
ARCH_KEYS = (
    "groups",
    "width_mult",
    "stage_repeats",
    "shuffle",
    "se",
    "stem_channels",
    "stage_out_channels",
    "mid_channels",
    "shuffle_inverse",
    "input_shift",
)


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-4)
    return a == b


def network_differences(stored: Dict[str, Any], wanted: Dict[str, Any], wanted_as: str) -> str:
    """The one "this file holds another network" check: ``""`` when the network a weights file stores (its
    ``config``) is the one ``wanted`` describes, else what differs, e.g. ``"groups=8 in the file, 3 for NAME"``.

    Only the :data:`ARCH_KEYS` that ``wanted`` names and the file states are compared, so a registered name's
    arguments (groups, width) accept a file with its own exact details (a converted checkpoint's stem, shuffle
    permutation, ``input_shift``), while a built model's full :meth:`ShuffleNetV1.config` must match the file in
    every entry. ``wanted_as`` ends each item: ``"for shufflenet_v1_x0_5_g3"``, ``"asked for"``, ``"in the model"``.
    """
    differ = []
    for key in ARCH_KEYS:
        if key not in wanted or stored.get(key) is None:
            continue
        have, want = stored[key], wanted[key]
        if key == "shuffle_inverse":
            have, want = bool(have), bool(want)
        if not _same_value(have, want):
            differ.append(f"{key}={have!r} in the file, {want!r} {wanted_as}")
    return "; ".join(differ)


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """The paper's channel shuffle (Sec. 3.1): view channels as ``(groups, n)``, transpose, flatten.

    Output channel ``k = j * groups + i`` is input channel ``i * n + j``, so every output group holds
    one channel from each input group. Uses the native ``channel_shuffle`` op, which computes exactly
    that permutation, supports autograd and channels_last, and is kept as a single op by TorchScript,
    tracing and the mobile optimizer. ``channel_shuffle(x, c // groups)`` is the inverse permutation.

    While ``torch.onnx.export`` runs, the same permutation is written as reshape/transpose/reshape (ONNX has
    no channel-shuffle operator and the TorchScript-based exporter has no translation for it); eager calls
    keep the native op, which is faster and keeps channels_last.
    """
    if not torch.jit.is_scripting():  # (TorchScript compiles the native op only)
        if torch.onnx.is_in_onnx_export():
            n, c, h, w = x.shape
            return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    return F.channel_shuffle(x, groups)


def shuffle_permutation(channels: int, groups: int) -> Tensor:
    """The permutation :func:`channel_shuffle` applies, as an index: ``channel_shuffle(x, groups)[:, k] ==
    x[:, perm[k]]``. Read off the operation itself (so there is one definition of the shuffle), exact for any
    channel count (float64 holds integers up to 2**53). ``shuffle_permutation(c, c // groups)`` is its inverse."""
    if groups < 1 or channels % groups:
        raise InvalidConfigError(f"shuffle_permutation: {channels} channels do not split into {groups} groups")
    index = torch.arange(channels, dtype=torch.float64).view(1, channels, 1, 1)
    return channel_shuffle(index, groups).flatten().long()


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle` (a no-op for ``groups == 1``)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return x
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class InputShift(nn.Module):
    """Adds a fixed per-channel constant to the input of the stem (only in converted models).

    A checkpoint trained on another input space (megvii: BGR 0-255, no normalization) pads its stem
    conv with that space's 0 (black), which is not 0 in the project's normalized input. With
    ``x + shift`` (shift = normalized value of the source's 0, negated) the stem's zero padding means the
    same pixel as in the source, so the converted model is exact at the image border too.
    """

    def __init__(self, shift: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor([float(s) for s in shift]).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.shift


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al.) on a unit's residual branch, as in Table 5's "2x with SE"."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))
        return x * s


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class ShuffleUnit(nn.Module):
    """The ShuffleNet unit of Figure 2 (b) for ``stride=1`` and (c) for ``stride=2``.

    GConv1 (1x1, ``groups``) -> BN -> ReLU -> channel shuffle -> 3x3 depthwise (stride) -> BN ->
    GConv2 (1x1, ``groups``) -> BN [-> SE]; stride 1: ``relu(x + branch)``; stride 2:
    ``relu(concat(avgpool3x3/2(x), branch))`` so the branch produces ``out_channels - in_channels``.

    Args:
        in_channels, out_channels: unit widths (equal for stride 1).
        mid_channels: bottleneck width (a multiple of ``groups``).
        stride: 1 or 2.
        groups: group count of both pointwise convolutions.
        first_grouped: ``False`` for the first unit of stage 2, whose GConv1 input (the stem) is too
            narrow to group; there GConv1 is a plain 1x1 conv and no shuffle follows it.
        shuffle: apply channel shuffle (``False`` for the Table 3 ablation).
        shuffle_inverse: use the inverse permutation (``groups = mid / g``), as megvii's published
            weights do; only needed for converted checkpoints whose shuffle cannot be rewritten.
        se: Squeeze-and-Excitation on the residual branch.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        stride: int,
        groups: int,
        first_grouped: bool = True,
        shuffle: bool = True,
        shuffle_inverse: bool = False,
        se: bool = False,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise InvalidConfigError(f"ShuffleUnit stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise InvalidConfigError(
                f"a stride-1 ShuffleUnit adds its input: in_channels ({in_channels}) must equal "
                f"out_channels ({out_channels})"
            )
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        g1 = groups if first_grouped else 1
        self.stride = stride
        self.gconv1 = _conv_bn(in_channels, mid_channels, 1, groups=g1)
        shuffle_groups = 1
        if shuffle and g1 > 1:
            shuffle_groups = mid_channels // groups if shuffle_inverse else groups
        self.shuffle = ChannelShuffle(shuffle_groups)
        self.dwconv = _conv_bn(mid_channels, mid_channels, 3, stride=stride, groups=mid_channels)
        self.gconv2 = _conv_bn(mid_channels, branch_out, 1, groups=groups)
        self.se = SqueezeExcite(branch_out) if se else nn.Identity()
        self.shortcut = nn.AvgPool2d(3, 2, 1) if stride == 2 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.gconv1(x), inplace=True)
        out = self.shuffle(out)
        out = self.dwconv(out)
        out = self.se(self.gconv2(out))
        if self.stride == 2:
            return F.relu(torch.cat((self.shortcut(x), out), 1), inplace=True)
        return F.relu(x + out, inplace=True)


def _make_stage(
    cin: int,
    cout: int,
    cmid: int,
    repeats: int,
    groups: int,
    first_stage: bool,
    shuffle: bool,
    shuffle_inverse: bool,
    se: bool,
) -> nn.Sequential:
    """One stage of Table 1: a stride-2 unit (``cin -> cout``) then ``repeats - 1`` stride-1 units."""
    units = [
        ShuffleUnit(
            cin if j == 0 else cout,
            cout,
            cmid,
            stride=2 if j == 0 else 1,
            groups=groups,
            first_grouped=not (first_stage and j == 0),
            shuffle=shuffle,
            shuffle_inverse=shuffle_inverse,
            se=se,
        )
        for j in range(repeats)
    ]
    return nn.Sequential(*units)


def take_feature_indices(num_levels: int, indices: Optional[Union[int, Sequence[int]]] = None) -> List[int]:
    """timm's feature-index convention: ``None`` all levels, an int ``n`` the last ``n``, a sequence those
    levels (negative counts from the end); sorted, each checked."""
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise InvalidConfigError(f"indices={indices}: ask for 1 to {num_levels} feature levels")
        return list(range(num_levels - indices, num_levels))
    take = sorted({i + num_levels if i < 0 else i for i in indices})
    if not take or take[0] < 0 or take[-1] >= num_levels:
        raise InvalidConfigError(f"indices={list(indices)}: feature levels run 0..{num_levels - 1}")
    return take


def nearest_multiple(x: float, d: int) -> int:
    """The multiple of ``d`` nearest to ``x`` (halves round up), at least ``d``: the one width-rounding rule."""
    return max(d, int(math.floor(x / d + 0.5)) * d)


def _nearest_valid(x: int, d: int) -> List[int]:
    lo = max(d, x // d * d)
    return sorted({lo, lo + d} - {x})


def nominal_stem(width_mult: float) -> int:
    if width_mult <= 0.5:
        return 12
    return 48 if width_mult >= 2.0 else 24


def stage_widths(groups: int, width_mult: float = 1.0) -> Dict[str, Any]:
    """Stem, stage output and bottleneck widths for ``groups`` and ``width_mult`` (module docstring)."""
    if groups not in TABLE1_STAGE_WIDTHS:
        raise InvalidConfigError(
            f"groups={groups} has no Table-1 widths; valid groups: {list(PAPER_GROUPS)} "
            f"(or pass stage_out_channels explicitly)"
        )
    if not width_mult > 0:
        raise InvalidConfigError(f"width_mult must be > 0, got {width_mult}")
    out = [nearest_multiple(c * width_mult, groups) for c in TABLE1_STAGE_WIDTHS[groups]]
    stem = max(groups, nominal_stem(width_mult) // groups * groups)
    return {"stem": stem, "out": out, "mid": [nearest_multiple(c / 4, groups) for c in out]}


def min_width_mult(groups: int, step: float = 0.01) -> float:
    """The smallest multiple of ``step`` for which the width rule gives a buildable network."""
    for i in range(1, int(round(1 / step)) + 1):
        w = round(i * step, 6)
        rule = stage_widths(groups, w)
        try:
            _check_widths(groups, rule["stem"], rule["out"], rule["mid"])
        except InvalidConfigError:
            continue
        return w
    return 1.0


def _check_widths(groups: int, stem: int, out: Sequence[int], mid: Sequence[int]) -> None:
    """Raise one clear message for the first width that a grouped conv cannot take."""
    checks = [("stem_channels", stem)] if groups > 1 else []
    checks += [(f"stage_out_channels[{i}]", c) for i, c in enumerate(out)]
    checks += [(f"mid_channels[{i}]", c) for i, c in enumerate(mid)]
    for name, c in checks:
        if c <= 0 or c % groups:
            raise InvalidConfigError(
                f"{name}={c} is not divisible by groups={groups}: every grouped 1x1 conv needs widths "
                f"divisible by g; nearest valid values: {_nearest_valid(c, groups)}"
            )
    prev = stem
    for i, c in enumerate(out):
        if c <= prev:
            raise InvalidConfigError(
                f"stage_out_channels[{i}]={c} must exceed the stage input width {prev} (a stride-2 unit "
                f"concatenates its input with a branch of out - in channels)"
            )
        prev = c


def resolve_widths(
    groups: int,
    width_mult: float,
    stem_channels: Optional[int] = None,
    stage_out_channels: Optional[Sequence[int]] = None,
    mid_channels: Optional[Sequence[int]] = None,
) -> Tuple[int, List[int], List[int]]:
    """``(stem, stage outputs, bottlenecks)`` of a network: the width rule, with any explicit override, checked.

    Raises :class:`InvalidConfigError` naming the first width a grouped conv cannot take; when the width rule
    itself fails (no override given), the message names the smallest valid ``width_mult`` for ``groups``.
    """
    if groups < 1:
        raise InvalidConfigError(f"groups must be >= 1, got {groups}")
    if stage_out_channels is None:
        rule = stage_widths(groups, width_mult)
        out = list(rule["out"])
        stem_rule = rule["stem"]
    else:
        out = [int(c) for c in stage_out_channels]
        if len(out) != 3:
            raise InvalidConfigError(f"stage_out_channels must have 3 entries, got {out}")
        stem_rule = max(groups, nominal_stem(width_mult) // groups * groups)
    mid = [int(c) for c in mid_channels] if mid_channels is not None else [nearest_multiple(c / 4, groups) for c in out]
    stem = int(stem_channels) if stem_channels is not None else stem_rule
    try:
        _check_widths(groups, stem, out, mid)
    except InvalidConfigError as e:
        if stage_out_channels is not None or mid_channels is not None or stem_channels is not None:
            raise
        # The width rule itself failed: the multiplier is too small for this g.
        raise InvalidConfigError(
            f"groups={groups}, width_mult={width_mult:g} is impossible: {e}; the smallest valid width_mult "
            f"for groups={groups} is {min_width_mult(groups):g}"
        ) from None
    return stem, out, mid


class SkeletonClassifier(nn.Module):
    """The part of Table 1's skeleton that does not depend on the unit: global pool, dropout, FC, and the
    timm-style API around them. :class:`ShuffleNetV1` and the Table-4 ``SkeletonNet`` share it; a subclass
    sets ``num_features``, ``num_classes``, ``global_pool``, ``drop_rate``, ``fc`` and ``feature_info``
    (:func:`skeleton_feature_info`) and defines ``forward_features``."""

    @property
    def head_hidden_size(self) -> int:
        """Width of ``forward_head(x, pre_logits=True)`` (timm): the pooled features (no pre-logits layer)."""
        return self.num_features

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def skeleton_feature_info(stem: int, out: Sequence[int]) -> List[Dict[str, Any]]:
    """timm ``feature_info`` of the skeleton: max pool (stride 4) and stages 2-4 (strides 8, 16, 32)."""
    return [
        dict(num_chs=stem, reduction=4, module="maxpool"),
        dict(num_chs=out[0], reduction=8, module="stage2"),
        dict(num_chs=out[1], reduction=16, module="stage3"),
        dict(num_chs=out[2], reduction=32, module="stage4"),
    ]


class ShuffleNetV1(SkeletonClassifier):
    """ShuffleNet v1 (Table 1): stem, stages 2-4 of ShuffleNet units, global pool, classifier.

    Args:
        groups: ``g`` of the pointwise group convolutions (Table 1: 1, 2, 3, 4, 8).
        width_mult: the paper's scale factor ``s`` (``"0.5x"`` is 0.5).
        stage_repeats: units per stage, ``(4, 8, 4)``; the paper's "shallow" variant halves them.
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        shuffle: channel shuffle on/off (Table 3).
        se: Squeeze-and-Excitation on every unit's residual branch (Table 5).
        stem_channels, stage_out_channels, mid_channels: override the width rule.
        shuffle_inverse: megvii's shuffle permutation (see :class:`ShuffleUnit`).
        in_chans, drop_rate: timm conventions.
        input_shift: per-channel constant added before the stem (:class:`InputShift`, child
            ``input_shift`` ahead of ``conv1``); only converted megvii checkpoints use it. ``None``: no module.

    Attributes follow timm: ``feature_info`` lists the stride-4/8/16/32 outputs (``maxpool``,
    ``stage2``, ``stage3``, ``stage4``) with their channels, so ``timm.create_model(...,
    features_only=True)`` and the detectron2 backbone take stages from this very module.
    """

    def __init__(
        self,
        groups: int = 3,
        width_mult: float = 1.0,
        stage_repeats: Sequence[int] = DEFAULT_STAGE_REPEATS,
        num_classes: int = 1000,
        shuffle: bool = True,
        se: bool = False,
        stem_channels: Optional[int] = None,
        stage_out_channels: Optional[Sequence[int]] = None,
        mid_channels: Optional[Sequence[int]] = None,
        shuffle_inverse: bool = False,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        input_shift: Optional[Sequence[float]] = None,
    ) -> None:
        super().__init__()
        groups = int(groups)
        stage_repeats = tuple(int(r) for r in stage_repeats)
        if len(stage_repeats) != 3 or min(stage_repeats) < 1:
            raise InvalidConfigError(f"stage_repeats must be three counts >= 1, got {stage_repeats}")
        stem, out, mid = resolve_widths(groups, width_mult, stem_channels, stage_out_channels, mid_channels)
        if global_pool not in ("avg", ""):
            raise InvalidConfigError(f"global_pool must be 'avg' or '', got {global_pool!r}")

        self.groups = groups
        self.width_mult = float(width_mult)
        self.stage_repeats = stage_repeats
        self.stem_channels = stem
        self.stage_out_channels = tuple(out)
        self.mid_channels = tuple(mid)
        self.shuffle = bool(shuffle)
        self.shuffle_inverse = bool(shuffle_inverse)
        self.se = bool(se)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.num_features = out[-1]

        if input_shift is not None and len(input_shift) != in_chans:
            raise InvalidConfigError(f"input_shift needs {in_chans} values (one per input channel), got {input_shift}")
        self.input_shift = InputShift(input_shift) if input_shift is not None else None
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_chans, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (cout, cmid, repeats) in enumerate(zip(out, mid, stage_repeats)):
            stage = _make_stage(cin, cout, cmid, repeats, groups, i == 0, shuffle, shuffle_inverse, se)
            setattr(self, f"stage{i + 2}", stage)
            cin = cout
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = skeleton_feature_info(stem, out)
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: every unit starts as (near) identity.
        for m in self.modules():
            if isinstance(m, ShuffleUnit) and m.stride == 1:
                nn.init.zeros_(m.gconv2[1].weight)

    def stages(self) -> List[nn.Module]:
        return [self.stage2, self.stage3, self.stage4]

    # ----------------------------------------------------------------------------------------------
    # timm's model API (checked by timm's own tests/test_models.py and tests/test_timm_contract.py)
    # ----------------------------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise schedules (timm's ``group_parameters``): stem, then each unit."""
        return dict(stem=r"^input_shift|^conv1", blocks=r"^stage(\d+)" if coarse else r"^stage(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each unit's activations in the backward pass instead of keeping them (same outputs)."""
        self.grad_checkpointing = bool(enable)

    @torch.jit.unused
    def _checkpointed_stage(self, stage: nn.Module, x: Tensor) -> Tensor:
        for unit in stage:
            x = checkpoint(unit, x, use_reentrant=False)
        return x

    @torch.jit.unused
    def _checkpointed_stages(self, x: Tensor) -> Tensor:
        for stage in self.stages():
            x = self._checkpointed_stage(stage, x)
        return x

    def _stem(self, x: Tensor) -> Tensor:
        if self.input_shift is not None:
            x = self.input_shift(x)
        return self.maxpool(self.conv1(x))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self._stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return self._checkpointed_stages(x)
        x = self.stage2(x)
        x = self.stage3(x)
        return self.stage4(x)

    @torch.jit.ignore
    def forward_intermediates(
        self,
        x: Tensor,
        indices: Optional[Union[int, Sequence[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """timm's ``forward_intermediates``: the outputs of the feature levels in :attr:`feature_info` (max
        pool, stages 2-4; ``indices``: the last ``n`` levels for an int, else the levels listed) and the final
        features. ``norm`` has no effect (no final norm layer)."""
        if output_fmt != "NCHW":
            raise InvalidConfigError(f"forward_intermediates: output_fmt must be 'NCHW', got {output_fmt!r}")
        take = take_feature_indices(len(self.feature_info), indices)
        last = max(take) if stop_early else len(self.feature_info) - 1
        intermediates = []
        x = self._stem(x)
        if 0 in take:
            intermediates.append(x)
        for level, stage in enumerate(self.stages()[:last], start=1):
            x = self._checkpointed_stage(stage, x) if self.grad_checkpointing else stage(x)
            if level in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    @torch.jit.ignore
    def prune_intermediate_layers(
        self, indices: Union[int, Sequence[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Drop the stages after the last level in ``indices`` (and the classifier); returns the kept levels."""
        take = take_feature_indices(len(self.feature_info), indices)
        for level in range(max(take) + 1, len(self.feature_info)):
            setattr(self, f"stage{level + 1}", nn.Identity())
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def config(self) -> Dict[str, Any]:
        """The constructor arguments that rebuild this architecture (stored beside saved weights)."""
        cfg = dict(
            groups=self.groups,
            width_mult=self.width_mult,
            stage_repeats=list(self.stage_repeats),
            num_classes=self.num_classes,
            shuffle=self.shuffle,
            se=self.se,
            stem_channels=self.stem_channels,
            stage_out_channels=list(self.stage_out_channels),
            mid_channels=list(self.mid_channels),
            shuffle_inverse=self.shuffle_inverse,
        )
        if self.input_shift is not None:
            cfg["input_shift"] = [float(v) for v in self.input_shift.shift.flatten()]
        return cfg


def _builder_name(groups: int, width_mult: float, options: Dict[str, Any]) -> str:
    """The registered name of what the builder makes (for looking up published weights)."""
    if options.get("se"):
        return shufflenet_v1_name(groups, width_mult, "se")
    if options.get("shuffle") is False:
        return shufflenet_v1_name(groups, width_mult, "noshuffle")
    return shufflenet_v1_name(groups, width_mult)


def _model_for(wf: WeightsFile, groups: int, width_mult: float, options: Dict[str, Any]) -> ShuffleNetV1:
    """The network the builder's arguments describe, as stored in ``wf`` when the file has a config (a converted
    checkpoint's ``input_shift`` / widths); a file of another network is refused with both descriptions."""
    if "num_classes" in options and wf.num_classes is not None and options["num_classes"] != wf.num_classes:
        raise InvalidConfigError(
            f"num_classes={options['num_classes']}: the weights {wf.path} have {wf.num_classes} classes; load them, "
            f"then replace the classifier: model.reset_classifier({options['num_classes']})"
        )
    if not (wf.config and "groups" in wf.config):
        options.setdefault("num_classes", wf.num_classes or 1000)
        return ShuffleNetV1(groups=groups, width_mult=width_mult, **options)
    differ = network_differences(wf.config, dict(groups=groups, width_mult=width_mult), "asked for")
    if differ:
        raise InvalidConfigError(f"{wf.path}: holds another network ({differ})")
    return ShuffleNetV1(**{**wf.config, **options})


def shufflenet_v1(
    groups: int = 3,
    width_mult: float = 1.0,
    weights: Union[None, str, os.PathLike[str], WeightsFile, ShuffleNetWeights] = None,
    progress: bool = True,
    **options: Any,
) -> ShuffleNetV1:
    """torchvision-style builder: ``shufflenet_v1(groups=3, width_mult=1.0, weights=None, **options)``.

    ``weights``: published weights (``"DEFAULT"``, ``"IMAGENET1K_MMPRETRAIN"``, a member of
    ``ShuffleNet_V1_X1_0_G3_Weights`` or its full name; downloaded once with a progress bar when ``progress``,
    converted and cached, see :mod:`shufflenet.models.pretrained`) or a file: this project's weights file, a
    Lightning checkpoint, a plain state dict, or an original public checkpoint (mmpretrain ``.pth``, megvii
    ``.pth.tar``; converted on load). ``options`` are :class:`ShuffleNetV1` arguments.
    """
    if weights is None:
        return ShuffleNetV1(groups=groups, width_mult=width_mult, **options)
    wf = weights_file(weights, _builder_name(groups, width_mult, options), progress=progress)
    model = _model_for(wf, groups, width_mult, dict(options))
    return load_state_dict_strict(model, wf.state_dict, str(wf.path))
