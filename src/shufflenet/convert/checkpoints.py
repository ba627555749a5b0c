"""Exact converters for the two public ShuffleNet v1 checkpoint layouts.

* megvii "ShuffleNet-Series" (``snetv1_group{3,8}_{0.5,1.0,1.5,2.0}x.pth.tar``): keys ``module.first_conv.*``,
  ``module.features.{k}.branch_main_{1,2}.*``, ``module.classifier.0.weight``; BGR 0-255 input without
  normalization; channel shuffle AFTER the depthwise conv + BN with the inverse of the paper's permutation.
* OpenMMLab mmpretrain (``shufflenet_v1_batch1024_imagenet_*.pth``, 1x g=3): keys ``backbone.*`` and
  ``head.fc.*``; RGB input normalized with mean/std on 0-255; shuffle after depthwise + BN, paper permutation.

Both become a :class:`~shufflenet.models.shufflenet.ShuffleNetV1` that takes the project's input (RGB,
0-1, ImageNet mean/std) and gives the same logits as the original network. How (``docs/weights.md``):

1. Depthwise conv and BN act per channel, so a shuffle after them equals the same shuffle before them with
   the depthwise filters and BN statistics permuted.
2. Per unit, the channels of GConv1's group ``A`` must reach GConv2's group ``B`` in equal numbers in the
   checkpoint and in our model (the source-group x target-group *count matrix*). Then the checkpoint's
   shuffle is rewritten into ours by reordering GConv1's output channels within each group and GConv2's
   input channels within each group (both stay grouped convs). The first unit of stage 2 has an ungrouped
   GConv1 (one source group, any order): its shuffle is absorbed into GConv1 and our model has none there.
   megvii's permutation fits the paper's for g=3 at every published width and g=8 2.0x; for g=8 0.5x/1.0x/
   1.5x some stage-2/3 count matrices differ, so the model is built with ``shuffle_inverse=True`` (the
   checkpoint's own permutation, moved before the depthwise conv) instead of approximating.
3. Input convention: the stem conv is rescaled per channel (BGR -> RGB, x 255 * std / source std). A mean
   offset cannot be folded into a zero-padded conv exactly (padding is 0 in the source's input space, i.e.
   black for megvii, but 0 is the mean colour in ours): megvii models get an ``input_shift`` (+mean/std)
   ahead of the stem so that zero padding is black again - exact everywhere. ``exact_border=False`` folds
   the offset into the stem BN instead (model loadable by its registry name; exact except the top/left
   image border - the residual is measured in ``docs/weights.md``). mmpretrain's mean/std are the
   project's times 255, so its stem is used as is.

CLI::

    python -m shufflenet.convert snetv1_group3_1.0x.pth.tar --out weights/megvii_g3_1.0x.pth
    python -m shufflenet.convert shufflenet_v1_batch1024_imagenet.pth --format mmpretrain --out mm.pth
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import run_cli
from ..fileio import sha256_file
from ..models.names import shufflenet_v1_name
from ..models.registry import UnknownModelError, get_spec
from ..models.shufflenet import (
    TABLE1_STAGE_WIDTHS,
    InvalidConfigError,
    ShuffleNetV1,
    shuffle_permutation,
    stage_widths,
)
from ..weights.io import (
    WeightsError,
    extract_state_dict,
    load_state_dict_strict,
    public_layout,
    read_checkpoint,
    save_weights,
    weights_dict,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LAYOUTS",
    "convert_checkpoint",
    "convert_megvii",
    "convert_mmpretrain",
    "count_matrix",
    "detect_layout",
    "load_converted",
    "match_shuffle",
    "package_weights",
    "main",
]


#: Published numbers, for the meta of converted files: (groups, width) -> top-1 error % and MFLOPs.
MEGVII_PUBLISHED = {
    (3, 2.0): (25.9, 524),
    (3, 1.5): (28.4, 292),
    (3, 1.0): (32.2, 138),
    (3, 0.5): (42.7, 38),
    (8, 2.0): (27.1, 522),
    (8, 1.5): (29.0, 290),
    (8, 1.0): (32.0, 138),
    (8, 0.5): (41.2, 40),
}
MMPRETRAIN_PUBLISHED = {(3, 1.0): dict(top1_err=100 - 68.13, top5_err=100 - 87.81, params_m=1.87, mflops=146)}

Source = Union[str, Path, Mapping[str, Any]]
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclass(frozen=True)
class Layout:
    """Where a checkpoint layout keeps each tensor, how it shuffles, and what input it expects."""

    name: str
    stem_conv: str
    stem_bn: str
    unit_parts: Dict[str, str]  # our part -> key infix: conv1, bn1, dw, bn2, conv2, bn3
    fc: str
    fc_bias: bool
    shuffle_inverse: bool  # True: megvii's (c/g, g) view; False: the paper's (g, c/g) view
    rgb: bool
    mean: Tuple[float, float, float]  # on 0-255 values, in the source's channel order
    std: Tuple[float, float, float]
    input_text: str
    patterns: Tuple[str, ...] = field(default=())


LAYOUTS: Dict[str, Layout] = {
    "megvii": Layout(
        name="megvii",
        stem_conv="first_conv.0",
        stem_bn="first_conv.1",
        unit_parts=dict(
            conv1="branch_main_1.0",
            bn1="branch_main_1.1",
            dw="branch_main_1.3",
            bn2="branch_main_1.4",
            conv2="branch_main_2.0",
            bn3="branch_main_2.1",
        ),
        fc="classifier.0",
        fc_bias=False,
        shuffle_inverse=True,
        rgb=False,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        input_text="BGR, 0-255, no mean/std",
        patterns=(
            "[module.]first_conv.{0,1}.*",
            "[module.]features.{k}.branch_main_1.{0,1,3,4}.*, features.{k}.branch_main_2.{0,1}.*",
            "[module.]classifier.0.weight",
        ),
    ),
    "mmpretrain": Layout(
        name="mmpretrain",
        stem_conv="backbone.conv1.conv",
        stem_bn="backbone.conv1.bn",
        unit_parts=dict(
            conv1="g_conv_1x1_compress.conv",
            bn1="g_conv_1x1_compress.bn",
            dw="depthwise_conv3x3_bn.conv",
            bn2="depthwise_conv3x3_bn.bn",
            conv2="g_conv_1x1_expand.conv",
            bn3="g_conv_1x1_expand.bn",
        ),
        fc="head.fc",
        fc_bias=True,
        shuffle_inverse=False,
        rgb=True,
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
        input_text="RGB, 0-255, mean (123.675, 116.28, 103.53) std (58.395, 57.12, 57.375)",
        patterns=(
            "backbone.conv1.{conv,bn}.*",
            "backbone.layers.{s}.{i}.{g_conv_1x1_compress,depthwise_conv3x3_bn,g_conv_1x1_expand}.{conv,bn}.*",
            "head.fc.{weight,bias}",
        ),
    ),
}


# --------------------------------------------------------------------------------------------------
# Permutations
# --------------------------------------------------------------------------------------------------
def _inverse(index: Tensor) -> Tensor:
    inv = torch.empty_like(index)
    inv[index] = torch.arange(index.numel())
    return inv


def count_matrix(position: Tensor, source_groups: int, target_groups: int) -> Tensor:
    """``N[A, B]``: how many channels of source group ``A`` land at a position in target group ``B``.

    ``position[c]`` is where channel ``c`` (an output channel of GConv1) enters GConv2.
    """
    m = position.numel()
    src = torch.arange(m) // (m // source_groups)
    dst = position // (m // target_groups)
    n = torch.zeros(source_groups * target_groups, dtype=torch.long)
    n.index_add_(0, src * target_groups + dst, torch.ones(m, dtype=torch.long))
    return n.view(source_groups, target_groups)


def match_shuffle(
    source_position: Tensor, target_position: Tensor, source_groups: int, target_groups: int
) -> Optional[Tensor]:
    """Rewrite one shuffle into another by reordering channels within groups, if that is possible.

    ``source_position[c]``: GConv2 input position of the checkpoint's GConv1 channel ``c``;
    ``target_position[c']``: the same in our model. Returns ``a`` with ``a[c'] = c`` (our GConv1 channel
    ``c'`` is the checkpoint's channel ``c``, same GConv1 group, and both reach the same GConv2 group), or
    ``None`` when the two count matrices differ (no such reordering exists).
    """
    if not torch.equal(
        count_matrix(source_position, source_groups, target_groups),
        count_matrix(target_position, source_groups, target_groups),
    ):
        return None
    m = source_position.numel()
    ns, nt = m // source_groups, m // target_groups
    a = torch.empty(m, dtype=torch.long)
    for src_group in range(source_groups):
        chans = torch.arange(src_group * ns, (src_group + 1) * ns)
        for tgt_group in range(target_groups):
            old = chans[source_position[chans] // nt == tgt_group]
            new = chans[target_position[chans] // nt == tgt_group]
            # Pair them in order of arrival position: keeps GConv2 unpermuted where the shuffles agree.
            a[new[torch.argsort(target_position[new])]] = old[torch.argsort(source_position[old])]
    return a


# --------------------------------------------------------------------------------------------------
# Reading a checkpoint: layout, sizes, shape check
# --------------------------------------------------------------------------------------------------
@dataclass
class SourceConfig:
    """The size of a checkpoint, read from its shapes."""

    layout: str
    groups: int
    stem: int
    out: List[int]
    mid: List[int]
    repeats: List[int]
    num_classes: int
    units: List[Tuple[int, int, str]]  # (stage 0..2, index in stage, key prefix)

    @property
    def width_mult(self) -> float:
        table = TABLE1_STAGE_WIDTHS.get(self.groups)
        if table is None:
            return 1.0
        return round(self.out[0] / table[0], 4)


def detect_layout(state_dict: Mapping[str, Any]) -> str:
    """``"megvii"`` or ``"mmpretrain"`` from the key names (:func:`shufflenet.weights.public_layout`), else an error
    naming the key patterns of both."""
    found = public_layout(state_dict)
    if found is not None:
        return found
    expected = "; ".join(f"{name}: {', '.join(lay.patterns)}" for name, lay in LAYOUTS.items())
    raise WeightsError(
        f"unknown checkpoint layout (first keys: {list(state_dict)[:4]}); expected the key patterns of {expected}"
    )


def _shape(sd: Mapping[str, Tensor], key: str, source: str) -> Tuple[int, ...]:
    if key not in sd:
        raise WeightsError(f"{source}: missing key '{key}'")
    return tuple(sd[key].shape)


def _read_config(sd: Mapping[str, Tensor], layout: Layout, source: str) -> SourceConfig:
    """Sizes from the shapes of the stem, the first unit of each stage and the classifier."""
    parts = layout.unit_parts
    if layout.name == "megvii":
        ks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"features\.(\d+)\.", k))})
        if not ks or ks != list(range(len(ks))):
            raise WeightsError(f"{source}: megvii unit keys 'features.{{k}}.*' must run 0..n-1, found {ks}")
        prefixes = [f"features.{k}." for k in ks]
        mids = [_shape(sd, p + parts["conv1"] + ".weight", source)[0] for p in prefixes]
        if len(ks) == 16:
            repeats = [4, 8, 4]  # documented; any width error then shows as a shape mismatch below
        else:  # another depth: a stage starts where the bottleneck width changes
            starts = [0] + [i for i in range(1, len(mids)) if mids[i] != mids[i - 1]]
            repeats = [b - a for a, b in zip(starts, starts[1:] + [len(mids)])]
        if len(repeats) != 3:
            raise WeightsError(f"{source}: expected 3 stages of units, found bottleneck widths {mids}")
        units, k = [], 0
        for s, r in enumerate(repeats):
            for j in range(r):
                units.append((s, j, prefixes[k]))
                k += 1
    else:
        found: Dict[int, set] = {}
        for key in sd:
            m = re.match(r"backbone\.layers\.(\d+)\.(\d+)\.", key)
            if m:
                found.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        if sorted(found) != [0, 1, 2] or any(sorted(v) != list(range(len(v))) for v in found.values()):
            raise WeightsError(
                f"{source}: mmpretrain unit keys 'backbone.layers.{{s}}.{{i}}.*' must cover stages 0, 1, 2 with "
                f"units 0..n-1, found { {s: sorted(v) for s, v in sorted(found.items())} }"
            )
        repeats = [len(found[s]) for s in range(3)]
        units = [(s, j, f"backbone.layers.{s}.{j}.") for s in range(3) for j in range(repeats[s])]
    stem = _shape(sd, layout.stem_conv + ".weight", source)[0]
    first = [p for s, j, p in units if j == 0]
    mid = [_shape(sd, p + parts["conv1"] + ".weight", source)[0] for p in first]
    conv2 = _shape(sd, first[0] + parts["conv2"] + ".weight", source)
    if conv2[1] <= 0 or mid[0] % conv2[1]:
        raise WeightsError(f"{source}: '{first[0] + parts['conv2']}.weight' shape {conv2} fits no group count")
    groups = mid[0] // conv2[1]
    out, cin = [], stem
    for p in first:
        cin = cin + _shape(sd, p + parts["conv2"] + ".weight", source)[0]
        out.append(cin)
    num_classes = _shape(sd, layout.fc + ".weight", source)[0]
    return SourceConfig(layout.name, groups, stem, out, mid, repeats, num_classes, units)


def _expected_shapes(cfg: SourceConfig, layout: Layout, with_counters: bool) -> Dict[str, Tuple[int, ...]]:
    """Every key of the layout with its shape, for the size read from the checkpoint."""
    shapes: Dict[str, Tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in _BN_KEYS:
            shapes[f"{prefix}.{name}"] = (c,)
        if with_counters:
            shapes[f"{prefix}.num_batches_tracked"] = ()

    g, parts = cfg.groups, layout.unit_parts
    shapes[layout.stem_conv + ".weight"] = (cfg.stem, 3, 3, 3)
    bn(layout.stem_bn, cfg.stem)
    cin = cfg.stem
    for s, j, p in cfg.units:
        out, mid = cfg.out[s], cfg.mid[s]
        g1 = 1 if (s, j) == (0, 0) else g
        branch = out - cin if j == 0 else out
        shapes[p + parts["conv1"] + ".weight"] = (mid, cin // g1, 1, 1)
        bn(p + parts["bn1"], mid)
        shapes[p + parts["dw"] + ".weight"] = (mid, 1, 3, 3)
        bn(p + parts["bn2"], mid)
        shapes[p + parts["conv2"] + ".weight"] = (branch, mid // g, 1, 1)
        bn(p + parts["bn3"], branch)
        cin = out
    shapes[layout.fc + ".weight"] = (cfg.num_classes, cin)
    if layout.fc_bias:
        shapes[layout.fc + ".bias"] = (cfg.num_classes,)
    return shapes


def _shape_only_module(shapes: Mapping[str, Tuple[int, ...]]) -> nn.Module:
    """A module whose state dict has exactly ``shapes`` (meta tensors: no memory), for the strict check."""
    root = nn.Module()
    for key, shape in shapes.items():
        *path, name = key.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_buffer(name, torch.empty(shape, device="meta"))
    return root


def _check_shapes(sd: Mapping[str, Tensor], cfg: SourceConfig, layout: Layout, source: str) -> None:
    counters = any(k.endswith(".num_batches_tracked") for k in sd)
    shapes = _expected_shapes(cfg, layout, counters)
    desc = f"{source} (read as {layout.name} g={cfg.groups} stem {cfg.stem} widths {cfg.out})"
    with warnings.catch_warnings():  # copying into meta tensors is the intended no-op
        warnings.simplefilter("ignore")
        load_state_dict_strict(_shape_only_module(shapes), sd, desc)


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------
def _grouped_to_dense_columns(weight: Tensor, groups: int, column_index: Tensor) -> Tensor:
    """Reorder the input channels of a grouped 1x1 conv: new input ``k`` is old input ``column_index[k]``.

    ``column_index`` must keep every index in its group (checked), so the result is the same grouped conv.
    """
    cout, cin_g = weight.shape[:2]
    cin = cin_g * groups
    col_group = column_index // cin_g
    if not torch.equal(col_group, torch.arange(cin) // cin_g):
        raise AssertionError("internal: a GConv2 input reordering leaves its group")
    local = (column_index % cin_g).view(groups, cin_g)  # per group: new local column -> old local column
    row_group = torch.arange(cout) // (cout // groups)
    idx = local[row_group]  # (cout, cin_g)
    return torch.gather(weight.flatten(1), 1, idx).view_as(weight)


def _fold_input(weight: Tensor, layout: Layout) -> Tuple[Tensor, List[float]]:
    """Stem weights for the project's input, and the shift that makes ``x + shift`` proportional to theirs.

    Source input channel for our RGB channel ``c``: ``src = c`` (RGB) or ``2 - c`` (BGR), with
    ``x_src = (255 * (std_c * x_c + mean_c) - M_src) / S_src = k_c * (x_c + shift_c)``,
    ``k_c = 255 * std_c / S_src`` and ``shift_c = (255 * mean_c - M_src) / (255 * std_c)``.
    """
    w = weight.double()
    new = torch.empty_like(w)
    shift = []
    for c in range(3):
        src = c if layout.rgb else 2 - c
        k = 255.0 * IMAGENET_STD[c] / layout.std[src]
        new[:, c] = w[:, src] * k
        shift.append((255.0 * IMAGENET_MEAN[c] - layout.mean[src]) / (255.0 * IMAGENET_STD[c]))
    return new.to(weight.dtype), shift


def _paper_entry(model: ShuffleNetV1, cfg: SourceConfig) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(arch, paper)``: the registry name whose model has exactly this architecture (else None), and
    the paper's numbers for the nearest registered name."""
    name = shufflenet_v1_name(cfg.groups, cfg.width_mult)
    try:
        spec = get_spec(name)
    except UnknownModelError:
        return None, {}
    paper = {"name": name, "top1_err": spec.paper_err, "mflops": spec.paper_mflops}
    try:
        rule = stage_widths(cfg.groups, cfg.width_mult)
    except InvalidConfigError:
        return None, paper
    same = (
        rule["stem"] == cfg.stem
        and rule["out"] == cfg.out
        and rule["mid"] == cfg.mid
        and list(cfg.repeats) == [4, 8, 4]
        and cfg.num_classes == 1000
        and not model.shuffle_inverse
        and model.input_shift is None
    )
    return (name if same else None), paper


def _state_dict_from(src: Source) -> Tuple[Dict[str, Tensor], str, Optional[str]]:
    """(state dict, source name, sha256 of the file or None)."""
    if isinstance(src, (str, Path)):
        path = Path(src)
        obj = read_checkpoint(path)
        return extract_state_dict(obj, str(path)), str(path), sha256_file(path)
    return extract_state_dict(src, "state dict"), "<state dict>", None


def _convert(src: Source, layout_name: str, exact_border: bool = True) -> Tuple[ShuffleNetV1, Dict[str, Any]]:
    """Read the checkpoint, choose the shuffle, fold the input convention, build the network, map every tensor,
    load it strictly, and describe what was done."""
    sd, source_name, source, sha, found = _read_source(src, layout_name)
    layout = LAYOUTS[found]
    cfg = _read_config(sd, layout, source)
    _check_shapes(sd, cfg, layout, source)
    not_rewritable = _units_not_rewritable(cfg, layout)
    inverse = bool(not_rewritable)
    stem_w, shift = _fold_input(sd[layout.stem_conv + ".weight"], layout)
    needs_shift = max(abs(v) for v in shift) > 1e-6
    input_shift = shift if (needs_shift and exact_border) else None
    model = _build_model(cfg, inverse, input_shift, source)
    new = {
        **_stem_state(sd, layout, stem_w, shift if needs_shift and not exact_border else None, input_shift),
        **_units_state(sd, cfg, layout, model),
        **_fc_state(sd, layout),
    }
    load_state_dict_strict(model, {k: v.detach().clone().contiguous() for k, v in new.items()}, f"{source} (converted)")
    model.eval()
    meta = _meta(model, cfg, found, layout, source_name, sha, not_rewritable, input_shift, needs_shift, exact_border)
    return model, meta


def _read_source(src: Source, layout_name: str) -> Tuple[Dict[str, Tensor], str, str, str, str]:
    """``(state dict, source name, source description, sha256, layout)``; a ``module.`` prefix (DataParallel) is
    dropped and said in the description."""
    sd, source_name, sha = _state_dict_from(src)
    source = source_name
    found = detect_layout(sd)
    if layout_name != "auto" and found != layout_name:
        raise WeightsError(f"{source}: asked for the {layout_name} layout but the keys are {found}'s")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        source = f"{source} (keys named without their 'module.' prefix)"
    return sd, source_name, source, sha, found


def _source_permutation(channels: int, groups: int, layout: Layout) -> Tensor:
    """The permutation the checkpoint's own shuffle applies to ``channels`` (megvii's is the paper's inverse)."""
    return shuffle_permutation(channels, channels // groups if layout.shuffle_inverse else groups)


def _units_not_rewritable(cfg: SourceConfig, layout: Layout) -> List[str]:
    """The units whose shuffle cannot be rewritten as the paper's (their count matrices differ). Empty: the converted
    network uses the paper's shuffle everywhere; else it keeps the checkpoint's own (``shuffle_inverse=True``)."""
    g = cfg.groups
    out = []
    for s, j, p in cfg.units:
        m = cfg.mid[s]
        if (s, j) != (0, 0) and g > 1:
            theirs, paper = _source_permutation(m, g, layout), shuffle_permutation(m, g)
            if match_shuffle(_inverse(theirs), _inverse(paper), g, g) is None:
                out.append(p.rstrip("."))
    return out


def _build_model(cfg: SourceConfig, inverse: bool, input_shift: Optional[List[float]], source: str) -> ShuffleNetV1:
    try:
        return ShuffleNetV1(
            groups=cfg.groups,
            width_mult=cfg.width_mult,
            stage_repeats=cfg.repeats,
            num_classes=cfg.num_classes,
            stem_channels=cfg.stem,
            stage_out_channels=cfg.out,
            mid_channels=cfg.mid,
            shuffle_inverse=inverse,
            input_shift=input_shift,
        )
    except InvalidConfigError as e:
        raise WeightsError(f"{source}: the checkpoint's widths do not make a ShuffleNetV1 ({e})") from None


def _bn_state(sd: Dict[str, Tensor], ours: str, theirs: str, index: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Our BatchNorm ``ours`` from their ``theirs`` (channels reordered by ``index``), with its batch counter."""
    out = {
        f"{ours}.{name}": sd[f"{theirs}.{name}"] if index is None else sd[f"{theirs}.{name}"][index]
        for name in _BN_KEYS
    }
    out[f"{ours}.num_batches_tracked"] = sd.get(theirs + ".num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


def _stem_state(
    sd: Dict[str, Tensor],
    layout: Layout,
    stem_w: Tensor,
    folded_shift: Optional[List[float]],
    input_shift: Optional[List[float]],
) -> Dict[str, Tensor]:
    """The stem conv (input convention folded in) and BN; ``input_shift`` as a buffer, or (``folded_shift``) the
    shift folded into the BN mean instead: conv(x + shift) = conv(x) + sum(w * shift) inside the image."""
    new: Dict[str, Tensor] = {}
    if input_shift is not None:
        new["input_shift.shift"] = torch.tensor(input_shift, dtype=torch.float32).view(1, 3, 1, 1)
    new["conv1.0.weight"] = stem_w
    new.update(_bn_state(sd, "conv1.1", layout.stem_bn))
    if folded_shift is not None:
        offset = (stem_w.double() * torch.tensor(folded_shift, dtype=torch.float64).view(1, 3, 1, 1)).sum((1, 2, 3))
        new["conv1.1.running_mean"] = (new["conv1.1.running_mean"].double() - offset).to(stem_w.dtype)
    return new


def _units_state(sd: Dict[str, Tensor], cfg: SourceConfig, layout: Layout, model: ShuffleNetV1) -> Dict[str, Tensor]:
    """Every unit's tensors: our GConv1 channel c' = their channel a[c']; our position k holds their a[s_t[k]]."""
    g, parts = cfg.groups, layout.unit_parts
    new: Dict[str, Tensor] = {}
    for s, j, p in cfg.units:
        ours = f"stage{s + 2}.{j}"
        m = cfg.mid[s]
        g1 = 1 if (s, j) == (0, 0) else g
        unit = getattr(model, f"stage{s + 2}")[j]
        s_t = shuffle_permutation(m, unit.shuffle.groups)  # identity when our unit does not shuffle
        s_src = _source_permutation(m, g, layout) if g > 1 else torch.arange(m)
        pos_src, pos_t = _inverse(s_src), _inverse(s_t)
        a = match_shuffle(pos_src, pos_t, g1, g)
        if a is None:  # cannot happen: _units_not_rewritable chose a shuffle whose count matrices agree
            raise AssertionError(f"internal: unit {p} cannot be rewritten")
        at_k = a[s_t]  # their channel at our GConv2 input position k
        new[f"{ours}.gconv1.0.weight"] = sd[p + parts["conv1"] + ".weight"][a]
        new.update(_bn_state(sd, f"{ours}.gconv1.1", p + parts["bn1"], a))
        new[f"{ours}.dwconv.0.weight"] = sd[p + parts["dw"] + ".weight"][at_k]
        new.update(_bn_state(sd, f"{ours}.dwconv.1", p + parts["bn2"], at_k))
        new[f"{ours}.gconv2.0.weight"] = _grouped_to_dense_columns(sd[p + parts["conv2"] + ".weight"], g, pos_src[at_k])
        new.update(_bn_state(sd, f"{ours}.gconv2.1", p + parts["bn3"]))
    return new


def _fc_state(sd: Dict[str, Tensor], layout: Layout) -> Dict[str, Tensor]:
    fc_w = sd[layout.fc + ".weight"]
    bias = sd[layout.fc + ".bias"] if layout.fc_bias else torch.zeros(fc_w.shape[0], dtype=fc_w.dtype)
    return {"fc.weight": fc_w, "fc.bias": bias}


def _meta(
    model: ShuffleNetV1,
    cfg: SourceConfig,
    found: str,
    layout: Layout,
    source_name: str,
    sha: str,
    not_rewritable: List[str],
    input_shift: Optional[List[float]],
    needs_shift: bool,
    exact_border: bool,
) -> Dict[str, Any]:
    """The JSON-able description of a conversion (stored in the converted file)."""
    g, inverse = cfg.groups, bool(not_rewritable)
    arch, paper = _paper_entry(model, cfg)
    published: Dict[str, Any] = {}
    key = (g, cfg.width_mult)
    if found == "megvii" and key in MEGVII_PUBLISHED:
        err, mflops = MEGVII_PUBLISHED[key]
        published = {"by": "megvii ShuffleNet-Series", "top1_err": err, "mflops": mflops}
    elif found == "mmpretrain" and key in MMPRETRAIN_PUBLISHED:
        published = {"by": "OpenMMLab mmpretrain", **MMPRETRAIN_PUBLISHED[key]}
    return {
        "converter": "shufflenet.convert",
        "source": source_name,
        "sha256": sha,
        "layout": found,
        "source_input": layout.input_text,
        "groups": g,
        "width_mult": cfg.width_mult,
        "stem_channels": cfg.stem,
        "stage_out_channels": list(cfg.out),
        "mid_channels": list(cfg.mid),
        "num_classes": cfg.num_classes,
        "shuffle_inverse": inverse,
        "shuffle": (
            "checkpoint's own permutation (shuffle_inverse=True); count matrices differ in " + ", ".join(not_rewritable)
            if inverse
            else "paper's permutation (checkpoint's shuffle rewritten exactly)"
        ),
        "input_shift": input_shift,
        "exact": bool(exact_border or not needs_shift),
        "border": (
            "exact (input_shift)"
            if input_shift is not None
            else "exact (no mean offset)"
            if not needs_shift
            else "approximate: mean offset folded into the stem BN, top/left border differs"
        ),
        "arch": arch,
        "paper": paper,
        "published": published,
    }


def convert_megvii(src: Source, exact_border: bool = True) -> Tuple[ShuffleNetV1, Dict[str, Any]]:
    """Convert a megvii ShuffleNet-Series checkpoint (file path, file dict or state dict).

    Returns ``(model, meta)``: an eval-mode :class:`ShuffleNetV1` for normalized RGB input and a JSON-able
    description. ``exact_border=False`` builds no ``input_shift`` (see the module docstring).
    """
    return _convert(src, "megvii", exact_border)


def convert_mmpretrain(src: Source, exact_border: bool = True) -> Tuple[ShuffleNetV1, Dict[str, Any]]:
    """Convert an OpenMMLab mmpretrain ShuffleNet v1 checkpoint; see :func:`convert_megvii`."""
    return _convert(src, "mmpretrain", exact_border)


def convert_checkpoint(
    src: Source, format: str = "auto", exact_border: bool = True
) -> Tuple[ShuffleNetV1, Dict[str, Any]]:
    """Convert either layout (``format``: ``"auto"``, ``"megvii"`` or ``"mmpretrain"``)."""
    if format not in ("auto", *LAYOUTS):
        raise WeightsError(f"unknown checkpoint format {format!r}; expected auto, {', '.join(LAYOUTS)}")
    return _convert(src, format, exact_border)


def package_weights(src: Source) -> Dict[str, Any]:
    """The package weights dict of a public checkpoint (what ``python -m shufflenet.convert`` writes)."""
    model, meta = convert_checkpoint(src)
    return weights_dict(model, arch=meta["arch"], meta=meta)


def load_converted(path: Union[str, Path]) -> ShuffleNetV1:
    """Rebuild a converted model from its package weights file (architecture from the stored config)."""
    from ..models.registry import create_model

    return create_model(None, weights=path).eval()


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def _table(meta: Mapping[str, Any]) -> str:
    rows = [
        ("source", meta["source"]),
        ("sha256", meta["sha256"]),
        ("layout", f"{meta['layout']} ({meta['source_input']})"),
        ("groups / width", f"g={meta['groups']}  {meta['width_mult']:g}x"),
        ("stem / stages / mid", f"{meta['stem_channels']} / {meta['stage_out_channels']} / {meta['mid_channels']}"),
        ("shuffle", meta["shuffle"]),
        ("image border", meta["border"]),
        ("registry name", meta["arch"] or "none (build from the stored config; load_converted)"),
        ("paper", json.dumps(meta["paper"]) if meta["paper"] else "-"),
        ("published", json.dumps(meta["published"]) if meta["published"] else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shufflenet.convert",
        description="Convert a public ShuffleNet v1 checkpoint (megvii or mmpretrain) into this project's "
        "weights file: same logits, input = RGB normalized with ImageNet mean/std.",
    )
    parser.add_argument("src", help="checkpoint file (snetv1_group3_1.0x.pth.tar, shufflenet_v1_*.pth)")
    parser.add_argument("--format", choices=["auto", *LAYOUTS], default="auto", help="checkpoint layout")
    parser.add_argument("--out", required=True, help="package weights file to write (atomically)")
    parser.add_argument(
        "--approx-border",
        action="store_true",
        help="megvii: fold the mean offset into the stem BN instead of adding input_shift; the model then has "
        "the registry architecture but differs at the top/left image border",
    )
    parser.add_argument("--json", action="store_true", help="print the meta as JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        model, meta = convert_checkpoint(args.src, args.format, exact_border=not args.approx_border)
        save_weights(model, args.out, arch=meta["arch"], meta=meta)
    except OSError as e:
        raise WeightsError(f"{args.out}: cannot write the converted weights ({e.strerror or e})") from None
    print(json.dumps(meta, indent=2) if args.json else _table(meta))
    print(f"wrote {args.out}")
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Console script ``shufflenet-convert``: :func:`main` with the project's one-line errors."""
    return run_cli(main, argv)
