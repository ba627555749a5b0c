"""The paper's figures, read once from ``paper_tables.json``: every model entry of Tables 1-6 and 8 as a
:class:`PaperEntry` with the registered name it describes. The registry puts each model's entries on its spec
(``ModelSpec.paper``, ``paper_mflops``, ``paper_err``); the complexity report, the baselines and the ablation runner
read them from there.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from ..constants import width_tag
from ..paths import paper_tables
from .names import shufflenet_v1_name

__all__ = ["PaperEntry", "paper_entries", "headline", "TABLE4_UNITS"]


@dataclass(frozen=True)
class PaperEntry:
    """One model's entry in one of the paper's tables."""

    table: str  # "1" ... "8"
    label: str  # the paper's words, e.g. "ShuffleNet 0.5x (g=3)", "ResNet @ 38 MFLOPs", "VGG-16"
    name: Optional[str]  # the registered name it describes; None for a model the project does not build
    mflops: Optional[float] = None
    err: Optional[float] = None  # ImageNet top-1 error (%)
    row: Optional[str] = None  # the table's row: Tables 2 and 3 "0.5x", Table 4 "38" (MFLOPs)
    column: Optional[str] = None  # the table's column: Table 2 "g=3", Table 3 "shuffle", Table 4 "ResNet"


#: Where a model's headline figures come from: the per-model tables first, then the rows of the ablations.
HEADLINE_ORDER = ("5", "1", "6", "8", "2", "3", "4")


def headline(entries: Tuple[PaperEntry, ...], what: str) -> Optional[float]:
    ranked = sorted((e for e in entries if getattr(e, what) is not None), key=lambda e: HEADLINE_ORDER.index(e.table))
    return getattr(ranked[0], what) if ranked else None


_SHUFFLENET_LABEL = re.compile(r"^ShuffleNet ([0-9.]+)x \((?:(with SE|shallow), )?g=(\d+)\)$")
_MOBILENET_LABEL = re.compile(r"^([0-9.]+) MobileNet-224$")
_VARIANTS = {None: "", "with SE": "se", "shallow": "shallow"}
#: Table 4's columns -> the ``skeleton_{unit}_{mflops}m`` models of :mod:`.baselines` (ShuffleNet is its own name).
TABLE4_UNITS = {"VGG-like": "vgg", "ResNet": "resnet", "Xception-like": "xception", "ResNeXt": "resnext"}


def _name_of_label(label: str) -> Optional[str]:
    """The name a paper label describes (``ShuffleNet 2x (with SE, g=3)``, ``0.5 MobileNet-224``, ``AlexNet``), or
    None for a model the project does not build (``VGG-16``). A ShuffleNet label of another form is an error."""
    m = _SHUFFLENET_LABEL.match(label)
    if m:
        width, option, groups = m.groups()
        return shufflenet_v1_name(int(groups), float(width), _VARIANTS[option])
    if "shufflenet" in label.lower():
        raise ValueError(f"paper_tables.json: cannot read the ShuffleNet label {label!r}")
    m = _MOBILENET_LABEL.match(label)
    if m:
        return f"mobilenet_v1_x{width_tag(float(m.group(1)))}"
    return "alexnet" if label == "AlexNet" else None


@functools.cache
def _all_paper_entries() -> Tuple[PaperEntry, ...]:
    tables = paper_tables()
    out: List[PaperEntry] = []
    for g, mflops in tables["table1_architecture"]["mflops_1x"].items():
        label = f"ShuffleNet 1x (g={g})"
        out.append(PaperEntry("1", label, _name_of_label(label), mflops=mflops))
    t2 = tables["table2_group_ablation"]
    for row, data in t2["rows"].items():
        for col, err in zip(t2["columns"], data["err"]):
            label = f"ShuffleNet {row} ({col})"
            out.append(PaperEntry("2", label, _name_of_label(label), data["mflops"], err, row, col))
    for r in tables["table3_shuffle_ablation"]:  # at the complexity of the Table 2 row of the same width
        mflops = t2["rows"][r["model"]]["mflops"] if r["model"] in t2["rows"] else None
        label = f"ShuffleNet {r['model']} (g={r['g']})"
        name = _name_of_label(label)
        out.append(PaperEntry("3", label, name, mflops, r["err_shuffle"], r["model"], "shuffle"))
        out.append(
            PaperEntry(
                "3", f"{label} no shuffle", f"{name}_noshuffle", mflops, r["err_no_shuffle"], r["model"], "no shuffle"
            )
        )
    t4 = tables["table4_units_at_equal_complexity"]
    for row, data in t4["rows"].items():
        for col, err in zip(t4["columns"], data["err"]):
            if err is None:  # the paper has no such model (VGG-like below 140 MFLOPs)
                continue
            if col == "ShuffleNet":
                width, groups = (s.strip() for s in data["shufflenet"].split(","))
                label = f"ShuffleNet {width} ({groups})"
                name = _name_of_label(label)
            else:
                label, name = f"{col} @ {row} MFLOPs", f"skeleton_{TABLE4_UNITS[col]}_{row}m"
            out.append(PaperEntry("4", label, name, float(row), err, row, col))
    for key, table in (("table5_vs_mobilenet", "5"), ("table6_complexity", "6")):
        for r in tables[key]:
            out.append(PaperEntry(table, r["model"], _name_of_label(r["model"]), r["mflops"], r["err"]))
    for r in tables["table8_arm_latency_ms"]["rows"]:
        out.append(PaperEntry("8", r["model"], _name_of_label(r["model"]), r["mflops"], r["err"]))
    return tuple(out)


def paper_entries(table: Optional[str] = None) -> List[PaperEntry]:
    """Every entry of the paper's Tables 1-6 and 8 (``table``: only that one), in the tables' order, each with the
    name it describes (registered or not: a ShuffleNet name the registry lacks is the caller's to report)."""
    return [e for e in _all_paper_entries() if table is None or e.table == table]
