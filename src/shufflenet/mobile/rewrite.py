"""Export-time rewrites: the same function as the eager ShuffleNet, in the forms each mobile runtime runs fastest.

:func:`for_runtime` returns a new module (over a deep copy of the weights; the backbone and the model passed
in are untouched) that computes what :class:`shufflenet.models.ShuffleNetV1` computes, operator for operator
up to float rounding, but written the way the target runtime executes best. Every exported file is still
verified against the *eager backbone* (``verify.verify_runtime``), so a rewrite that changed the function
would be refused like any other broken export.

What changes, and why it is the same function (measured effects: docs/mobile.md):

* **stride-2 ReLU moves onto the branch.** ``relu(cat(avgpool(x), b)) == cat(avgpool(x), relu(b))`` because
  every unit's input is non-negative (it is the output of a ReLU or of the max pool over the stem's ReLU), so
  is its average. ``relu(b)`` then fuses into GConv2 (``conv2d_clamp`` / XNNPACK's conv output clamp)
  instead of running as a separate pass over the concatenated tensor.
* **channel shuffle after the depthwise conv in stride-2 units** (megvii's placement), on a tensor 4x
  smaller. The depthwise conv and its BN act channel by channel, so they commute with the permutation once
  their per-channel parameters are permuted the same way (bit-exact).
* **shortcut pool** (``avg_pool2d(3, 2, 1)``, ``count_include_pad=True``): ``"dwconv"`` writes it as the
  depthwise 3x3/2 convolution with weights 1/9 and zero padding, which XNNPACK runs (its own average pooling
  excludes the padding, so ExecuTorch's partitioner leaves ``avg_pool2d`` outside the delegate); ``"pool"``
  keeps ``avg_pool2d``.
* **stem max pool**: ``"pool"`` keeps ``max_pool2d`` (XNNPACK's max pooling in ExecuTorch, and in the lite
  interpreter of mobile builds, where ``aten::max_pool2d`` dispatches to XNNPACK); ``"slices"`` writes it as
  the separable maximum of strided slices of the padded input (exact: max is exact, and the padding is
  ``-inf`` as in ``max_pool2d``), which is faster than the desktop ``max_pool2d_with_indices`` kernel.
* **pooling head**: ``"mean"`` (``x.mean((2, 3))``) or ``"keepdim"`` (``x.mean((2, 3), keepdim=True)``
  then ``flatten``: the form XNNPACK's partitioner takes, so the whole ``.pte`` is one delegate).

:class:`CameraInput` is the export option for camera frames: ``uint8`` NHWC in, normalization folded into
the stem convolution, exact at the border (the input is shifted so that the stem's zero padding is the
normalized zero, the ``input_shift`` trick of the converters).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..models.shufflenet import ChannelShuffle, ShuffleNetV1, ShuffleUnit, channel_shuffle, shuffle_permutation
from .source import MobileError

__all__ = ["RewriteOptions", "RUNTIME_DEFAULTS", "for_runtime", "FastShuffleNet", "FastShuffleUnit", "CameraInput"]
__all__ += ["ReshapeShuffle", "reshape_shuffle", "with_reshape_shuffles"]


@dataclass(frozen=True)
class RewriteOptions:
    shortcut: str = "dwconv"  #: "dwconv" | "pool"
    maxpool: str = "pool"  #: "pool" | "slices"
    head: str = "mean"  #: "mean" | "keepdim"
    shuffle_after_dw: bool = True  #: stride-2 units only
    branch_relu: bool = True  #: stride-2 ReLU on the branch only (fuses into GConv2)
    shuffle: str = "native"  #: "native" (the model's channel_shuffle) | "module" (torch.nn.ChannelShuffle)


#: The forms measured fastest per runtime on the benchmark host (docs/mobile.md, "what the rewrite does").
RUNTIME_DEFAULTS: Dict[str, RewriteOptions] = {
    "ptl": RewriteOptions(shortcut="dwconv", maxpool="slices", head="mean"),
    "pte": RewriteOptions(shortcut="dwconv", maxpool="pool", head="keepdim"),
    # ONNX Runtime: the model's channel_shuffle becomes Reshape/Transpose/Reshape during torch.onnx.export.
    "onnx": RewriteOptions(shortcut="dwconv", maxpool="pool", head="keepdim"),
    # pnnx (ncnn's converter) has no functional aten::channel_shuffle, but converts the torch.nn.ChannelShuffle
    # module to ncnn's ShuffleChannel layer (the traced reshape/transpose form becomes 5-D Reshape + Permute with
    # dynamic shapes: measured 5x slower in ncnn for ShuffleNet 0.5x at 224).
    "ncnn": RewriteOptions(shortcut="dwconv", maxpool="pool", head="keepdim", shuffle="module"),
    # LiteRT (litert-torch): the model's channel_shuffle becomes RESHAPE/TRANSPOSE/RESHAPE in the converter; the
    # shortcut pool as a depthwise conv (as written, avg_pool2d with count_include_pad becomes PAD +
    # AVERAGE_POOL_2D: TFLite's pooling excludes the padding, as XNNPACK's does). The ONNX forms, not tuned apart.
    "tflite": RewriteOptions(shortcut="dwconv", maxpool="pool", head="keepdim"),
}


def reshape_shuffle(x: Tensor, groups: int) -> Tensor:
    """:func:`~shufflenet.models.shufflenet.channel_shuffle` as reshape -> transpose -> reshape (bit-exact: a
    permutation of channels), the pattern converters recognise (pnnx -> ncnn ``ShuffleChannel``)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ReshapeShuffle(nn.Module):
    """A :class:`ChannelShuffle` in the reshape form (for models the rewrite does not restructure)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = int(groups)

    def forward(self, x: Tensor) -> Tensor:
        return reshape_shuffle(x, self.groups) if self.groups > 1 else x


def with_reshape_shuffles(model: nn.Module, form: str = "reshape") -> nn.Module:
    """A deep copy of ``model`` with every :class:`ChannelShuffle` in another form (detectors, backbones with
    ``features_only``, ...): ``"reshape"`` (:class:`ReshapeShuffle`: what the ONNX exporter translates from a
    trace) or ``"module"`` (``torch.nn.ChannelShuffle``: what pnnx converts to ncnn's ShuffleChannel);
    ``model`` itself when it has none."""
    if not any(isinstance(m, ChannelShuffle) for m in model.modules()):
        return model
    new = copy.deepcopy(model)
    for parent in list(new.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ChannelShuffle):
                groups = child.groups
                swap = ReshapeShuffle(groups) if form == "reshape" or groups == 1 else nn.ChannelShuffle(groups)
                setattr(parent, name, swap)
    return new


def _permuted_dw(dw: nn.Sequential, perm: Tensor) -> nn.Sequential:
    """A copy of the depthwise conv + BN whose channel ``perm[k]`` does what channel ``k`` did."""
    new = copy.deepcopy(dw)
    conv, bn = new[0], new[1]
    with torch.no_grad():
        conv.weight[perm] = dw[0].weight.clone()
        if conv.bias is not None:
            conv.bias[perm] = dw[0].bias.clone()
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(bn, name)
            if t is not None:
                t[perm] = getattr(dw[1], name).clone()
    return new


def _avgpool_as_dwconv(channels: int) -> nn.Conv2d:
    """``avg_pool2d(3, 2, 1, count_include_pad=True)`` as a depthwise conv: weights 1/9, zero padding."""
    conv = nn.Conv2d(channels, channels, 3, 2, 1, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0 / 9.0)
    conv.weight.requires_grad_(False)
    return conv


class FastShuffleUnit(nn.Module):
    """A :class:`ShuffleUnit`'s modules (copied), run in the runtime's fastest equivalent form."""

    def __init__(self, unit: ShuffleUnit, opts: RewriteOptions) -> None:
        super().__init__()
        if not isinstance(unit.shortcut, (nn.AvgPool2d, nn.Identity)):
            raise MobileError(f"rewrite: unexpected shortcut {type(unit.shortcut).__name__}")
        self.stride = int(unit.stride)
        groups = unit.shuffle.groups if isinstance(unit.shuffle, ChannelShuffle) else 1
        self.shuffle_groups = int(groups)
        self.gconv1 = copy.deepcopy(unit.gconv1)
        self.gconv2 = copy.deepcopy(unit.gconv2)
        self.se = copy.deepcopy(unit.se)
        mid = unit.dwconv[0].out_channels
        self.late_shuffle = bool(opts.shuffle_after_dw and self.stride == 2 and self.shuffle_groups > 1)
        if self.late_shuffle:
            self.dwconv = _permuted_dw(unit.dwconv, shuffle_permutation(mid, self.shuffle_groups))
        else:
            self.dwconv = copy.deepcopy(unit.dwconv)
        self.branch_relu = bool(opts.branch_relu)
        self.use_module = opts.shuffle == "module" and self.shuffle_groups > 1
        self.shuffle_module = nn.ChannelShuffle(self.shuffle_groups) if self.use_module else nn.Identity()
        if self.stride == 2:
            cin = unit.gconv1[0].in_channels
            self.shortcut: nn.Module = _avgpool_as_dwconv(cin) if opts.shortcut == "dwconv" else nn.AvgPool2d(3, 2, 1)
        else:
            self.shortcut = nn.Identity()

    def _shuffle(self, x: Tensor) -> Tensor:
        if self.use_module:
            return self.shuffle_module(x)
        return channel_shuffle(x, self.shuffle_groups)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.gconv1(x))
        if self.shuffle_groups > 1 and not self.late_shuffle:
            out = self._shuffle(out)
        out = self.dwconv(out)
        if self.late_shuffle:
            out = self._shuffle(out)
        out = self.se(self.gconv2(out))
        if self.stride == 2:
            if self.branch_relu:  # x >= 0 (output of a ReLU or max pool over one), so avgpool(x) >= 0
                return torch.cat((self.shortcut(x), F.relu(out)), 1)
            return F.relu(torch.cat((self.shortcut(x), out), 1))
        return F.relu(x + out)


def _maxpool_slices(x: Tensor) -> Tensor:
    """``max_pool2d(x, 3, 2, 1)`` as the maximum over strided slices (rows, then columns): exact."""
    h, w = x.shape[-2], x.shape[-1]
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    x = F.pad(x, [1, 1, 1, 1], value=float("-inf"))
    r = torch.maximum(
        torch.maximum(x[:, :, :, 0 : 2 * wo - 1 : 2], x[:, :, :, 1 : 2 * wo : 2]), x[:, :, :, 2 : 2 * wo + 1 : 2]
    )
    return torch.maximum(
        torch.maximum(r[:, :, 0 : 2 * ho - 1 : 2], r[:, :, 1 : 2 * ho : 2]), r[:, :, 2 : 2 * ho + 1 : 2]
    )


class FastShuffleNet(nn.Module):
    """:class:`ShuffleNetV1` (a deep copy of its modules) in the rewritten form; same inputs and outputs."""

    def __init__(self, model: ShuffleNetV1, opts: RewriteOptions) -> None:
        super().__init__()
        mp = model.maxpool
        geometry = [_pair(getattr(mp, k, 0)) for k in ("kernel_size", "stride", "padding", "dilation")]
        if not isinstance(mp, nn.MaxPool2d) or mp.ceil_mode or geometry != [(3, 3), (2, 2), (1, 1), (1, 1)]:
            raise MobileError(f"rewrite: unexpected stem pool {mp}")
        if model.global_pool not in ("avg", ""):
            raise MobileError(f"rewrite: unexpected global_pool {model.global_pool!r}")
        self.input_shift = copy.deepcopy(model.input_shift)
        self.conv1 = copy.deepcopy(model.conv1)
        self.maxpool_slices = opts.maxpool == "slices"
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2, self.stage3, self.stage4 = (
            nn.Sequential(*[FastShuffleUnit(u, opts) for u in st]) for st in (model.stage2, model.stage3, model.stage4)
        )
        self.pool = model.global_pool == "avg"
        self.keepdim = opts.head == "keepdim"
        self.fc = copy.deepcopy(model.fc)

    def forward(self, x: Tensor) -> Tensor:
        if self.input_shift is not None:
            x = self.input_shift(x)
        x = self.conv1(x)
        x = _maxpool_slices(x) if self.maxpool_slices else self.maxpool(x)
        x = self.stage4(self.stage3(self.stage2(x)))
        if self.pool:
            x = x.mean((2, 3), keepdim=True).flatten(1) if self.keepdim else x.mean((2, 3))
        return self.fc(x)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def for_runtime(model: nn.Module, runtime: str, opts: Optional[RewriteOptions] = None) -> nn.Module:
    """The fastest equivalent form of ``model`` for ``runtime`` (a key of :data:`RUNTIME_DEFAULTS`): only an
    eval-mode :class:`ShuffleNetV1` as built is rewritten (other models are returned as they are); the argument
    is never modified."""
    if runtime not in RUNTIME_DEFAULTS:
        raise MobileError(f"rewrite: runtime must be one of {sorted(RUNTIME_DEFAULTS)}, got {runtime!r}")
    if type(model) is not ShuffleNetV1 or not all(type(u) is ShuffleUnit for st in model.stages() for u in st):
        return model  # not the backbone as built (other models, or a measurement reference with swapped units)
    if model.training:
        raise MobileError("rewrite: the model must be in eval mode")
    return FastShuffleNet(model, opts or RUNTIME_DEFAULTS[runtime]).eval()


class CameraInput(nn.Module):
    """Camera-frame input: ``uint8`` ``N x H x W x 3`` (RGB) in, the wrapped network's output out.

    ``(p / 255 - mean) / std`` is folded into the stem convolution: ``conv(W, (p - 255 mean) / (255 std))
    == conv(W / (255 std), p - 255 mean)``; the shift ``p - 255 mean`` makes the stem's zero padding the
    normalized zero, so the result equals the float model's at the border too (no approximation). Needs a
    network whose first operation is a bias-free (or biased) 3x3 conv with zero padding reached as
    ``conv1[0]`` (ShuffleNetV1 and its rewritten form); the ``input_shift`` of a converted model is folded the
    same way.
    """

    def __init__(
        self, net: nn.Module, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        conv = getattr(getattr(net, "conv1", None), "__getitem__", None)
        if conv is None or not isinstance(net.conv1[0], nn.Conv2d):
            raise MobileError("--camera-input needs a ShuffleNet (a stem conv at conv1[0])")
        net = copy.deepcopy(net)
        stem: nn.Conv2d = net.conv1[0]
        mean_t = torch.tensor([float(m) for m in mean])
        std_t = torch.tensor([float(s) for s in std])
        shift = getattr(net, "input_shift", None)
        # normalized input z = p / (255 std) - mean / std (+ t); padding must be z = 0, i.e. p = 255 (mean - t std)
        t = shift.shift.flatten() if shift is not None else torch.zeros(3)
        zero_pixel = 255.0 * (mean_t - t * std_t)
        with torch.no_grad():
            stem.weight.div_((255.0 * std_t).view(1, -1, 1, 1))
        net.input_shift = None
        self.register_buffer("zero_pixel", zero_pixel.view(1, 1, 1, 3))
        self.net = net

    def forward(self, frame: Tensor) -> Tensor:
        x = frame.to(torch.float32) - self.zero_pixel  # N x H x W x 3
        return self.net(x.permute(0, 3, 1, 2))
