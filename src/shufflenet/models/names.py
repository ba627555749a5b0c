"""The one spelling of a ShuffleNet v1 model name: ``shufflenet_v1_x{width}_g{groups}[_{variant}]``.

``{width}`` is the multiplier with ``_`` for the point (:func:`shufflenet.constants.width_tag`: 0.5 -> ``0_5``,
1.0 -> ``1_0``); ``variant`` is one of the paper's options (``se``, ``shallow``, ``noshuffle``) or empty. Every
place that builds or reads such a name (registry, converters, complexity, ablations, weights) calls these two
functions, so the scheme is written once.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from ..constants import width_tag

__all__ = ["SHUFFLENET_V1_VARIANTS", "ShuffleNetV1Name", "shufflenet_v1_name", "parse_shufflenet_v1_name"]

#: The name suffixes of the paper's variants (Table 3 ``noshuffle``, Table 5 ``se`` and ``shallow``).
SHUFFLENET_V1_VARIANTS = ("se", "shallow", "noshuffle")

_PATTERN = re.compile(r"^shufflenet_v1_x(\d+)_(\d+)_g(\d+)(?:_(" + "|".join(SHUFFLENET_V1_VARIANTS) + r"))?$")


class ShuffleNetV1Name(NamedTuple):
    groups: int
    width_mult: float
    variant: str  #: "" or one of :data:`SHUFFLENET_V1_VARIANTS`


def shufflenet_v1_name(groups: int, width_mult: float, variant: str = "") -> str:
    """``shufflenet_v1_name(3, 1.0)`` -> ``"shufflenet_v1_x1_0_g3"``; ``variant="se"`` appends ``_se``."""
    if variant and variant not in SHUFFLENET_V1_VARIANTS:
        raise ValueError(f"unknown ShuffleNet v1 variant {variant!r}; expected one of {SHUFFLENET_V1_VARIANTS}")
    return f"shufflenet_v1_x{width_tag(float(width_mult))}_g{int(groups)}" + (f"_{variant}" if variant else "")


def parse_shufflenet_v1_name(name: str) -> Optional[ShuffleNetV1Name]:
    """The groups, width and variant a name spells, or ``None`` for a name outside the scheme."""
    m = _PATTERN.match(name)
    if m is None:
        return None
    return ShuffleNetV1Name(int(m.group(3)), float(f"{m.group(1)}.{m.group(2)}"), m.group(4) or "")
