"""The Table-8 report: the paper's comparisons, markdown and the PNG chart of a benchmark result."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..fileio import atomic_write
from .host import isa_summary

__all__ = ["SIZES", "RATIOS", "analyse", "fastest", "efficiency", "ratios", "rule_of_thumb", "markdown", "plot"]

#: Ratios of the fastest runtime's medians, as (numerator key, denominator key, label, target or None).
RATIOS = [
    ("alexnet", "sn0.5", "AlexNet / ShuffleNet 0.5x (paper headline ~13x)", 13.0),
    ("mobilenet", "sn2", "MobileNet 1.0 / ShuffleNet 2x", None),
    ("sn1", "sn0.5", "ShuffleNet 1x / 0.5x", None),
    ("sn2", "sn0.5", "ShuffleNet 2x / 0.5x", None),
    ("megvii0.5", "sn0.5", "megvii-style 0.5x / ours 0.5x", 1.5),
    ("megvii1", "sn1", "megvii-style 1x / ours 1x", 1.5),
    ("megvii2", "sn2", "megvii-style 2x / ours 2x", 1.5),
    ("tv_v2_0.5", "sn0.5", "torchvision ShuffleNetV2 0.5x / ours 0.5x", 1.0),
    ("tv_v2_1", "sn1", "torchvision ShuffleNetV2 1x / ours 1x", 1.0),
]

SIZES = [(224, 224), (480, 640), (720, 1280)]
#: ShuffleNet 0.5x's MAC/s as a share of AlexNet's at the same size, on each model's fastest runtime.
SHARE_TARGET = 0.70
#: The paper's rule of thumb (Sec. 4.5): each 4x fewer FLOPs gave ~2.6x speed.
RULE_SPEEDUP_PER_4X = 2.6


def analyse(result: Dict[str, Any]) -> Dict[str, Any]:
    """Add the fastest runtime per model and size, the MAC/s efficiency, the paper's ratios and the rule of
    thumb to a benchmark result (from its cells; nothing is measured here)."""
    result["fastest"] = fastest(result)
    result["efficiency"] = efficiency(result)
    result["ratios"] = ratios(result)
    result["rule_of_thumb"] = rule_of_thumb(result)
    return result


def fastest(result: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Per model and size: the runtime with the lowest median (what the ratios use) and its median."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for key, per_rt in result["cells"].items():
        for tag in {t for c in per_rt.values() for t in c}:
            have = [(rt, c[tag]["median_ms"]) for rt, c in per_rt.items() if tag in c]
            best = min([kv for kv in have if kv[0] != "eager"] or have, key=lambda kv: kv[1])  # eager: if alone
            out.setdefault(key, {})[tag] = {"runtime": best[0], "median_ms": best[1]}
    return out


def efficiency(result: Dict[str, Any]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """MAC/s of each model's fastest runtime and its share of AlexNet's MAC/s at the same size."""
    out: Dict[str, Dict[str, Dict[str, float]]] = {}
    fast = result["fastest"]
    for key, m in result["models"].items():
        for tag, macs in m["macs"].items():
            if tag not in fast.get(key, {}):
                continue
            gmacs = macs / (fast[key][tag]["median_ms"] / 1e3) / 1e9
            out.setdefault(key, {})[tag] = {"gmac_per_s": gmacs}
    for per in out.values():
        for tag, row in per.items():
            ref = out.get("alexnet", {}).get(tag)
            if ref:
                row["share_of_alexnet"] = row["gmac_per_s"] / ref["gmac_per_s"]
    return out


def _ratio(result: Dict[str, Any], num: str, den: str, tag: str, rt: Optional[str] = None) -> Optional[float]:
    """median(num) / median(den) at ``tag`` through ``rt`` (None: each model's fastest runtime), or None."""
    cell = [result["cells"].get(k, {}).get(rt, {}) if rt else result["fastest"].get(k, {}) for k in (num, den)]
    a, b = cell[0].get(tag), cell[1].get(tag)
    return a["median_ms"] / b["median_ms"] if a and b else None


def ratios(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The paper's ratios and the measured ones (fastest runtime of each model; per runtime too)."""
    out = []
    pms = result["paper"]["ms"]
    models = result["models"]
    sizes = [f"{h}x{w}" for h, w in result["settings"]["sizes"]]
    all_sizes = [f"{h}x{w}" for h, w in SIZES]
    for num, den, label, target in RATIOS:
        if num not in models or den not in models:
            continue
        row: Dict[str, Any] = {"ratio": label, "num": num, "den": den}
        row.update({k: {} for k in ("paper", "measured", "fastest", "target", "met")})
        pn, pd = models[num]["paper_row"], models[den]["paper_row"]
        for tag in sizes:
            if pn and pd and tag in all_sizes:
                i = all_sizes.index(tag)
                row["paper"][tag] = pms[pn][i] / pms[pd][i]
            for rt in result["settings"]["runtimes"]:
                if _ratio(result, num, den, tag, rt) is not None:
                    row["measured"].setdefault(rt, {})[tag] = _ratio(result, num, den, tag, rt)
            if _ratio(result, num, den, tag) is not None:
                row["fastest"][tag] = _ratio(result, num, den, tag)
                want = target.get(tag) if isinstance(target, dict) else target
                if want is not None:
                    row["target"][tag] = want
                    row["met"][tag] = row["fastest"][tag] >= want
        out.append(row)
    return out


#: (bigger, smaller) model pairs the rule of thumb is shown for: the widths, and AlexNet against ShuffleNet 0.5x.
RULE_PAIRS = (("sn1", "sn0.5"), ("sn2", "sn1"), ("sn2", "sn0.5"), ("alexnet", "sn0.5"))


def rule_of_thumb(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Time ratios the paper's rule of thumb predicts for the ShuffleNet widths (from their MACs at 224) and the
    measured ones (fastest runtime)."""
    out = []
    for big, small in RULE_PAIRS:
        mb, ms = result["models"].get(big), result["models"].get(small)
        if not mb or not ms or not ms["macs"].get("224x224"):
            continue
        flops = mb["macs"]["224x224"] / ms["macs"]["224x224"]
        measured, per_runtime = {}, {}
        for tag in mb["macs"]:
            if _ratio(result, big, small, tag) is not None:
                measured[tag] = _ratio(result, big, small, tag)
            for rt in result["settings"]["runtimes"]:
                if _ratio(result, big, small, tag, rt) is not None:
                    per_runtime.setdefault(rt, {})[tag] = _ratio(result, big, small, tag, rt)
        predicted = RULE_SPEEDUP_PER_4X ** (math.log(flops) / math.log(4.0))
        out.append(
            {
                "pair": f"{mb['label']} / {ms['label']}",
                "flops_ratio": flops,
                "predicted": predicted,
                "measured": measured,  # fastest runtime of each model
                "per_runtime": per_runtime,
            }
        )
    return out


def markdown(result: Dict[str, Any], command: str = "", sections: Sequence[str] = ()) -> str:
    """The Table-8 report; ``sections``: more markdown lines before the closing note (e.g. per-op profiles)."""
    h = result["host"]
    sizes = [f"{a}x{b}" for a, b in result["settings"]["sizes"]]
    all_sizes = [f"{a}x{b}" for a, b in SIZES]
    rts = result["settings"]["runtimes"]
    st = result["settings"]
    lines = [
        "# Table 8 (latency), reproduced on this machine",
        "",
        f"Host: {h['cpu']} ({h['arch']}, {h['logical_cpus']} logical CPUs), {h['threads']} thread(s), "
        f"torch {h['torch']} (XNNPACK {'on' if h['xnnpack'] else 'off'}, "
        f"get_cpu_capability() {h.get('torch_cpu_capability', '?')})"
        + (f", executorch {result['executorch']}" if result.get("executorch") and "pte" in rts else "")
        + f"; batch 1, {st.get('input_layout', 'nchw').upper()} float32 tensor in, {st['warmup']} warm-up + up to "
        f"{st['repeats']} interleaved rounds; median process-CPU ms per call (wall medians in the JSON). "
        "Paper: " + result["paper"]["platform"] + ".",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        "Median ms per runtime; **bold** = the fastest runtime, which the ratios and MAC/s use:",
        "",
        "| model | " + " | ".join(f"{rt} {s}" for s in sizes for rt in rts) + f" | paper ms ({', '.join(sizes)}) |",
        "|---|" + "---:|" * (len(sizes) * len(rts)) + "---|",
    ]
    for key, m in result["models"].items():
        p = result["paper"]["ms"].get(m["paper_row"] or "", None)
        pstr = ", ".join(f"{p[all_sizes.index(s)]:g}" if s in all_sizes else "-" for s in sizes) if p else "-"
        vals = []
        for s in sizes:
            best = result["fastest"].get(key, {}).get(s, {}).get("runtime")
            for rt in rts:
                c = result["cells"].get(key, {}).get(rt, {}).get(s)
                v = f"{c['median_ms']:.1f}" if c else "-"
                vals.append(f"**{v}**" if c and rt == best else v)
        lines.append(f"| {m['label']} | " + " | ".join(vals) + f" | {pstr} |")
    lines += [
        "",
        "Efficiency (fastest runtime): GMAC/s and share of AlexNet's MAC/s at the same size "
        "(the paper's implementation: ShuffleNet 0.5x at ~64 % of AlexNet's at 224; target: ShuffleNet 0.5x at "
        f">= {100 * SHARE_TARGET:.0f} %):",
        "",
        "| model | MMACs @224 | " + " | ".join(f"GMAC/s {s} | vs AlexNet {s}" for s in sizes) + " |",
        "|---|---:|" + "---:|---:|" * len(sizes),
    ]
    for key, m in result["models"].items():
        eff = result["efficiency"].get(key, {})
        m224 = m["macs"].get("224x224")
        cols = []
        for s in sizes:
            e = eff.get(s)
            share = e.get("share_of_alexnet") if e else None
            mark = (" ✓" if share >= SHARE_TARGET else " ✗") if key == "sn0.5" and share is not None else ""
            cols += [f"{e['gmac_per_s']:.2f}" if e else "-", f"{100 * share:.0f} %{mark}" if share is not None else "-"]
        lines.append(f"| {m['label']} | {f'{m224 / 1e6:.0f}' if m224 else '-'} | " + " | ".join(cols) + " |")
    lines += [
        "",
        "Ratios of the fastest runtimes' medians (paper; measured; target, met?):",
        "",
        "| ratio | " + " | ".join([f"paper {s}" for s in sizes] + [f"measured {s}" for s in sizes]) + " | target |",
        "|---|" + "---:|" * (2 * len(sizes)) + "---|",
    ]
    for r in result["ratios"]:
        ps = [f"{r['paper'][s]:.1f}x" if s in r["paper"] else "-" for s in sizes]
        ms = []
        for s in sizes:
            v = r["fastest"].get(s)
            mark = "" if s not in r["met"] else (" ✓" if r["met"][s] else " ✗")
            ms.append(f"{v:.2f}x{mark}" if v is not None else "-")
        tgt = ", ".join(f">= {r['target'][s]:g}" for s in sizes if s in r["target"])
        if r["target"] and len(set(r["target"].values())) == 1:
            tgt = f">= {next(iter(r['target'].values())):g}"
        lines.append(f"| {r['ratio']} | " + " | ".join(ps) + " | " + " | ".join(ms) + f" | {tgt or '-'} |")
    lines += [
        "",
        "The same ratios per runtime (each model through that runtime):",
        "",
        "| ratio | runtime | " + " | ".join(sizes) + " |",
        "|---|---|" + "---:|" * len(sizes),
    ]
    for r in result["ratios"]:
        for rt, per in r["measured"].items():
            lines.append(
                f"| {r['ratio']} | {rt} | " + " | ".join(f"{per[s]:.2f}x" if s in per else "-" for s in sizes) + " |"
            )
    lines += rule_markdown(result, sizes)
    lines += isa_markdown(result)
    lines += list(sections)
    lines += [
        "",
        "The machine is shared with other jobs: absolute ms are noisy; the ratios of interleaved runs are the result.",
        "",
    ]
    return "\n".join(lines)


def rule_markdown(result: Dict[str, Any], sizes: Sequence[str]) -> List[str]:
    """The rule-of-thumb table: predicted time ratio beside the measured one, on the fastest and per runtime."""
    rule = result.get("rule_of_thumb") or rule_of_thumb(result)
    if not rule:
        return []
    lines = [
        "",
        "The paper's rule of thumb (each 4x fewer FLOPs gave ~2.6x speed, i.e. time ~ FLOPs^0.69) beside the "
        "measured time ratios, on each model's fastest runtime and through each runtime:",
        "",
        "| pair | runtime | FLOPs ratio | predicted | " + " | ".join(f"measured {s}" for s in sizes) + " |",
        "|---|---|---:|---:|" + "---:|" * len(sizes),
    ]
    for row in rule:
        per = [("fastest", row["measured"])] + list(row.get("per_runtime", {}).items())
        for rt, measured in per:
            lines.append(
                f"| {row['pair']} | {rt} | {row['flops_ratio']:.1f}x | {row['predicted']:.2f}x | "
                + " | ".join(f"{measured[s]:.2f}x" if s in measured else "-" for s in sizes)
                + " |"
            )
    return lines


def isa_markdown(result: Dict[str, Any]) -> List[str]:
    """Which kernels each runtime ran, as far as it says (``"not reported"`` where it does not)."""
    isa = result.get("kernel_isa")
    if not isa:
        return []
    host = isa["host"]
    flags = host.get("cpu_flags")
    lines = [
        "",
        f"Kernel ISA: host {host['arch']}, torch `get_cpu_capability()` {host['torch_cpu_capability']}, oneDNN bf16 "
        f"{host['onednn_bf16']}, fp16 {host['onednn_fp16']}; CPU flags the runtimes dispatch on: "
        + (", ".join(flags) if flags else "not readable")
        + ". What each runtime says about its kernels:",
        "",
        "| runtime | kernels | what it reports |",
        "|---|---|---|",
    ]
    for rt, info in isa["runtimes"].items():
        lines.append(f"| {rt} | {info.get('kernels', '-')} | {isa_summary(info)} |")
    return lines


def plot(result: Dict[str, Any], path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    sizes = [f"{a}x{b}" for a, b in result["settings"]["sizes"]]
    rts = result["settings"]["runtimes"]
    keys = list(result["models"])
    fig, axes = plt.subplots(2, len(sizes), figsize=(5 * len(sizes), 8), squeeze=False)
    width = 0.8 / max(1, len(rts))
    for j, s in enumerate(sizes):
        ax = axes[0][j]
        for i, rt in enumerate(rts):
            vals = [result["cells"].get(k, {}).get(rt, {}).get(s, {}).get("median_ms", float("nan")) for k in keys]
            ax.bar([x + i * width for x in range(len(keys))], vals, width, label=rt)
        ax.set_yscale("log")
        ax.set_title(f"{s}: median latency (ms, log)")
        ax.set_xticks([x + width * (len(rts) - 1) / 2 for x in range(len(keys))])
        ax.set_xticklabels([result["models"][k]["label"].replace(" (", "\n(") for k in keys], fontsize=6, rotation=45)
        ax.legend(fontsize=8)
        ax2 = axes[1][j]
        rr = result["ratios"]
        series = [
            ("paper", [r["paper"].get(s, float("nan")) for r in rr]),
            ("measured", [r["fastest"].get(s, float("nan")) for r in rr]),
        ]
        w2 = 0.8 / len(series)
        for i, (lab, vals) in enumerate(series):
            ax2.bar([x + i * w2 for x in range(len(rr))], vals, w2, label=lab)
        ax2.set_title(f"{s}: ratios (paper vs measured, fastest runtime)")
        ax2.set_xticks([x + w2 * (len(series) - 1) / 2 for x in range(len(rr))])
        ax2.set_xticklabels([r["ratio"].split(" (")[0].replace(" / ", "\n/ ") for r in rr], fontsize=6, rotation=45)
        ax2.axhline(1.0, color="k", lw=0.5)
        ax2.legend(fontsize=8)
    h = result["host"]
    title = f"ShuffleNet Table 8 on {h['cpu']} ({h['arch']}), {h['threads']} thread(s), torch {h['torch']}"
    # wrapped to the figure's width (about 11 characters per inch at this size), so no end is cut off
    fig.suptitle(textwrap.fill(title, width=int(11 * fig.get_figwidth())), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96 if len(title) <= 11 * fig.get_figwidth() else 0.93))
    with atomic_write(path, "wb") as f:
        fig.savefig(f, dpi=110, format="png")
    plt.close(fig)
    return path
