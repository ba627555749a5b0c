"""The paper's ablations (Tables 2, 3 and 4) trained at small scale, several seeds per row, resumable.

    python -m tools.ablations table3 --data.root /data/cifar10 --steps 600 --seeds 3
    python -m tools.ablations table2 --data.root /data/cifar10 --steps 600 --width 0.25
    python -m tools.ablations table4 --data.root /data/cifar10 --steps 600 --width 13 38
    python -m tools.ablations table3 --data.root D --steps 600 --rows 'shufflenet_v1_x0_25_g8*'

trains every row of one table with the same budget and the same recipe as ``classification/train.py`` (the
paper's, from the package's ``configs/classification/base.yaml``: SGD momentum 0.9, lr 0.5 at batch 1024 scaled
linearly to the batch, linear decay to 0 over the run, weight decay 4e-5, RandomResizedCrop + flip), using the
package's :class:`~shufflenet.classification.ImageClassifier` and
:class:`~shufflenet.classification.ImageFolderDataModule` under a plain ``pytorch_lightning.Trainer``
with ``max_steps``. The runs are interleaved (every row for seed 0, then every row for seed 1, ...), so a
change of machine load during the experiment hits all rows alike.

Rows (registered model names, :func:`table_rows`):

* ``table2`` -- group count at fixed complexity: ``shufflenet_v1_x{w}_g{1,2,3,4,8}`` for each ``--width``.
* ``table3`` -- channel shuffle on/off: ``shufflenet_v1_x{w}_g{3,8}`` and ``..._noshuffle`` for each width.
* ``table4`` -- other units in the same skeleton at equal complexity: ``skeleton_{vgg,resnet,xception,
  resnext}_{M}m`` (those registered at that complexity) and the paper's ShuffleNet of that row, for each
  ``--width`` read as MFLOPs (13, 38, 140).

Output folder (``--out``, default ``outputs/experiments/<table>``):

* ``settings.json`` -- what makes runs comparable (table, steps, batch, image size, data root, recipe); a
  rerun with other values is refused (naming the differing keys) instead of mixing incomparable runs.
* ``runs/<row>_s<seed>.json`` -- one finished (row, seed): validation top-1 error, steps, wall time,
  images/s. Written atomically when the run ends; a rerun skips the runs that have a file, so a killed
  experiment continues with the first unfinished run.
* ``results.json`` / ``results.md`` / ``results.png`` -- per row mean +- std over seeds beside the paper's
  error, the paper's ordering vs the measured one, and each of the paper's claims judged as
  ``reproduced`` / ``not reproduced`` / ``within noise`` (see :func:`judge`). Rewritten after every run.

See docs/ablations.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from shufflenet.classification import ClassificationError
from shufflenet.errors import run_cli
from shufflenet.fileio import tmp_sibling, write_json_atomic, write_text_atomic
from shufflenet.models import get_spec, list_models, paper_entries
from shufflenet.paths import configs_dir

log = logging.getLogger(__name__)

__all__ = [
    "TABLES",
    "AblationError",
    "Row",
    "table_rows",
    "select_rows",
    "run_table",
    "summarize",
    "judge",
    "load_recipe",
    "build_parser",
    "main",
    "cli",
]

TABLES = ("table2", "table3", "table4")
DEFAULT_WIDTHS = {"table2": (0.25, 0.5), "table3": (0.25, 0.5), "table4": (13.0, 38.0)}
#: Results of two rows differ "beyond noise" when the difference of the means exceeds this many standard
#: errors of that difference (unpaired, sample std over seeds).
NOISE_SIGMAS = 2.0
UNITS = ("vgg", "resnet", "xception", "resnext")
UNIT_LABELS = {
    "vgg": "VGG-like",
    "resnet": "ResNet",
    "xception": "Xception-like",
    "resnext": "ResNeXt",
    "shufflenet": "ShuffleNet",
}
UNIT_OF_COLUMN = {label: unit for unit, label in UNIT_LABELS.items()}
#: Settings that make runs comparable; a rerun in the same --out must agree on all of them.
SETTING_KEYS = ("table", "steps", "batch_size", "image_size", "resize_size", "data_root", "recipe")


class AblationError(ClassificationError):
    """Bad input to the ablation runner (unknown table or row, missing data, changed settings)."""


# --- rows ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One row of a table: a registered model and what the paper says about it."""

    name: str  # registered model name
    label: str  # the paper's words, e.g. "0.25x g=3 no shuffle"
    group: str  # rows compared with each other, e.g. "0.25x" or "13 MFLOPs"
    paper_mflops: Optional[float]
    paper_err: Optional[float]
    groups: Optional[int] = None  # g of a ShuffleNet row
    shuffle: Optional[bool] = None
    unit: Optional[str] = None  # table 4: vgg / resnet / xception / resnext / shufflenet


def _width_label(width: float) -> str:
    return f"{width:g}x"


def table_rows(table: str, widths: Optional[Sequence[float]] = None) -> List[Row]:
    """Every row of ``table`` at the given widths (table 2/3: width multipliers; table 4: MFLOPs), with the paper's
    figures as the model specs hold them (:func:`shufflenet.models.paper_entries`)."""
    if table not in TABLES:
        raise AblationError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    widths = list(DEFAULT_WIDTHS[table] if not widths else widths)
    number = table[len("table") :]
    entries = [e for e in paper_entries(number) if e.name is not None]
    paper_rows = list(dict.fromkeys(e.row for e in entries))
    registered = set(list_models())
    rows: List[Row] = []
    for w in widths:
        key = _width_label(w) if table != "table4" else f"{w:g}"
        chosen = [e for e in entries if e.row == key]
        if not chosen:
            what = f"{key} MFLOPs row" if table == "table4" else f"{key} row"
            known = "complexities" if table == "table4" else "widths"
            raise AblationError(
                f"{table} has no {what}; the paper's {known}: {', '.join(paper_rows)} (give them with --width)"
            )
        group = f"{key} MFLOPs" if table == "table4" else key
        for e in chosen:
            if e.name not in registered:  # the registry registers every model the paper's ablations name
                raise AblationError(f"{table} row {e.label!r} maps to {e.name!r}, which is not a registered model")
            spec = get_spec(e.name)
            shufflenet = spec.family == "shufflenet"
            unit = UNIT_OF_COLUMN.get(e.column) if table == "table4" else None
            label = e.label if table != "table4" else f"{e.label if shufflenet else e.column} ({key} MFLOPs)"
            rows.append(
                Row(
                    e.name,
                    label,
                    group,
                    e.mflops,
                    e.err,
                    groups=spec.kwargs.get("groups") if shufflenet else None,
                    shuffle=spec.kwargs.get("shuffle", True) if shufflenet else None,
                    unit=unit,
                )
            )
    return rows


def select_rows(rows: Sequence[Row], wanted: Optional[Sequence[str]]) -> List[Row]:
    """The rows named in ``wanted`` (model names or glob patterns), in the table's order."""
    if not wanted:
        return list(rows)
    names = [r.name for r in rows]
    chosen = set()
    for pattern in wanted:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise AblationError(f"unknown row {pattern!r} for these widths; rows: {', '.join(names)}")
        chosen.update(hits)
    return [r for r in rows if r.name in chosen]


# --- recipe and settings ------------------------------------------------------------------------------------
def _base_config_path() -> Path:
    path = configs_dir("classification") / "base.yaml"
    if not path.is_file():
        raise AblationError(f"{path} (the paper's recipe) is missing from the package")
    return path


def load_recipe() -> Dict[str, Any]:
    """The paper's recipe from ``base.yaml``: the optimizer/schedule options of the module and the
    augmentation options of the data module (everything except arch, sizes, root, steps and workers)."""
    import yaml

    cfg = yaml.safe_load(_base_config_path().read_text())
    model = {k: v for k, v in (cfg.get("model") or {}).items() if k != "arch"}
    data = {k: cfg["data"][k] for k in ("crop_scale", "hflip") if k in (cfg.get("data") or {})}
    if "crop_scale" in data:
        data["crop_scale"] = [float(x) for x in data["crop_scale"]]
    return {"model": model, "data": data}


def default_resize(image_size: int) -> int:
    """Evaluation resize of the short side: the paper's 256/224 ratio at ImageNet-like sizes; at CIFAR-like
    sizes (<= 64 px, images that small to begin with) the whole image (resize = crop)."""
    return image_size if image_size <= 64 else int(round(image_size * 256 / 224))


def check_settings(out: Path, settings: Dict[str, Any]) -> None:
    """Write ``settings.json`` on the first run; refuse a rerun whose settings differ."""
    path = out / "settings.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = [k for k in SETTING_KEYS if old.get(k) != settings.get(k)]
        if diff:
            detail = "; ".join(f"{k}: {_short(old.get(k))} there, {_short(settings.get(k))} now" for k in diff)
            raise AblationError(
                f"{out} holds runs made with other settings ({', '.join(diff)} differ: {detail}); "
                f"use another --out or the same settings"
            )
        return
    write_json_atomic(settings, path)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


# --- one training run ---------------------------------------------------------------------------------------
def run_path(out: Path, row: str, seed: int) -> Path:
    return out / "runs" / f"{row}_s{seed}.json"


def train_one(
    row: Row, seed: int, settings: Dict[str, Any], num_workers: int = 1, accelerator: str = "auto"
) -> Dict[str, Any]:
    """Train ``row`` with ``seed`` for ``settings['steps']`` steps and validate once; returns the run record."""
    import torch

    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    deterministic = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)  # one progress line per run is printed by run_table
        return _train(row, seed, settings, num_workers, accelerator)
    finally:  # the Trainer sets torch's deterministic flag and the loggers are global: give the caller its own back
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _train(row: Row, seed: int, settings: Dict[str, Any], num_workers: int, accelerator: str) -> Dict[str, Any]:
    import pytorch_lightning as pl
    import torch

    from shufflenet.classification import ImageClassifier, ImageFolderDataModule

    recipe = settings["recipe"]
    pl.seed_everything(seed, workers=True, verbose=False)
    dm = ImageFolderDataModule(
        root=settings["data_root"],
        batch_size=settings["batch_size"],
        num_workers=num_workers,
        image_size=settings["image_size"],
        resize_size=settings["resize_size"],
        seed=seed,
        persistent_workers=False,
        **recipe["data"],
    )
    model = ImageClassifier(arch=row.name, num_classes=dm.num_classes, **recipe["model"])
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=settings["steps"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=10**9,
        deterministic=False,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(does not have many workers|LeafSpec|GPU available).*")
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        train_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        results = trainer.validate(model, datamodule=dm, verbose=False)
        val_s = time.perf_counter() - t1
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    top1 = metrics.get("val/top1", float("nan"))
    steps = int(trainer.global_step)
    return {
        "row": row.name,
        "seed": seed,
        "val_top1_err": 100.0 * (1.0 - top1),
        "val_top5_err": 100.0 * (1.0 - metrics["val/top5"]) if "val/top5" in metrics else None,
        "val_loss": metrics.get("val/loss"),
        "steps": steps,
        "images_seen": steps * settings["batch_size"],
        "train_wall_s": round(train_s, 3),
        "val_wall_s": round(val_s, 3),
        "wall_s": round(train_s + val_s, 3),
        "images_per_s": round(steps * settings["batch_size"] / train_s, 2) if train_s > 0 else None,
        "val_images": len(dm.val_set) if dm.val_set is not None else None,
        "lr": float(model.scaled_lr()),
        "threads": torch.get_num_threads(),
        "num_workers": num_workers,
        "device": str(model.device),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- statistics and claims ----------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> Tuple[Optional[float], Optional[float]]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def judge(gain: Optional[float], se: Optional[float]) -> str:
    """Verdict on a claim "gain > 0" (gain in error points, measured): ``reproduced`` if the gain exceeds
    ``NOISE_SIGMAS`` standard errors, ``not reproduced`` if it is that far below 0, else ``within noise``.
    Without a noise estimate (one seed) the sign alone decides, marked ``(1 seed)``."""
    if gain is None:
        return "not measured"
    if se is None:
        return ("reproduced" if gain > 0 else "not reproduced") + " (1 seed, noise unknown)"
    if gain > NOISE_SIGMAS * se:
        return "reproduced"
    if gain < -NOISE_SIGMAS * se:
        return "not reproduced"
    return "within noise"


@dataclass
class _Stat:
    mean: Optional[float]
    std: Optional[float]
    n: int

    def se(self) -> Optional[float]:
        if self.std is None or self.n < 2:
            return None
        return self.std / math.sqrt(self.n)


def _diff_claim(text: str, better: Row, worse: Row, stats: Dict[str, _Stat]) -> Dict[str, Any]:
    """Claim: ``better`` has a lower error than ``worse``."""
    a, b = stats[better.name], stats[worse.name]
    paper_gain = (worse.paper_err - better.paper_err) if None not in (better.paper_err, worse.paper_err) else None
    gain = (b.mean - a.mean) if None not in (a.mean, b.mean) else None
    se = math.sqrt(a.se() ** 2 + b.se() ** 2) if None not in (a.se(), b.se()) else None
    return {
        "claim": text,
        "better": better.name,
        "worse": worse.name,
        "paper_gain": paper_gain,
        "measured_gain": gain,
        "noise_se": se,
        "verdict": judge(gain, se),
        "seed_counts": [a.n, b.n],
    }


def claims_for(table: str, rows: Sequence[Row], stats: Dict[str, _Stat]) -> List[Dict[str, Any]]:
    """The paper's claims that the chosen rows can test, each with the measured gain and a verdict."""
    by_group: Dict[str, List[Row]] = {}
    for r in rows:
        by_group.setdefault(r.group, []).append(r)
    claims: List[Dict[str, Any]] = []
    for grp, members in by_group.items():
        if table == "table2":
            g1 = next((r for r in members if r.groups == 1), None)
            if g1 is None:
                continue
            for r in members:
                if r.groups and r.groups > 1:
                    claims.append(_diff_claim(f"{grp}: g={r.groups} beats g=1", r, g1, stats))
        elif table == "table3":
            pairs = {}
            for r in members:
                pairs.setdefault(r.groups, {})[r.shuffle] = r
            gains = {}
            for g, pair in sorted(pairs.items()):
                if True in pair and False in pair:
                    c = _diff_claim(f"{grp} g={g}: shuffle beats no shuffle", pair[True], pair[False], stats)
                    claims.append(c)
                    gains[g] = c
            if 3 in gains and 8 in gains:
                c3, c8 = gains[3], gains[8]
                p = (c8["paper_gain"] - c3["paper_gain"]) if None not in (c3["paper_gain"], c8["paper_gain"]) else None
                m = (
                    (c8["measured_gain"] - c3["measured_gain"])
                    if None not in (c3["measured_gain"], c8["measured_gain"])
                    else None
                )
                se = (
                    math.sqrt(c3["noise_se"] ** 2 + c8["noise_se"] ** 2)
                    if None not in (c3["noise_se"], c8["noise_se"])
                    else None
                )
                claims.append(
                    {
                        "claim": f"{grp}: the shuffle gain is larger at g=8 than at g=3",
                        "better": pairs[8][True].name,
                        "worse": pairs[3][True].name,
                        "paper_gain": p,
                        "measured_gain": m,
                        "noise_se": se,
                        "verdict": judge(m, se),
                        "seed_counts": c3["seed_counts"] + c8["seed_counts"],
                    }
                )
        else:
            shuffle = next((r for r in members if r.unit == "shufflenet"), None)
            if shuffle is None:
                continue
            for r in members:
                if r is not shuffle:
                    claims.append(_diff_claim(f"{grp}: ShuffleNet unit beats {UNIT_LABELS[r.unit]}", shuffle, r, stats))
    return claims


def _ordering(rows: Sequence[Row], key: Callable[[Row], Optional[float]]) -> List[str]:
    known = [r for r in rows if key(r) is not None]
    return [r.name for r in sorted(known, key=lambda r: key(r))]


def _kendall_tau(a: Sequence[str], b: Sequence[str]) -> Optional[float]:
    common = [x for x in a if x in b]
    n = len(common)
    if n < 2:
        return None
    pos = {x: i for i, x in enumerate(b)}
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            if pos[common[i]] < pos[common[j]]:
                concordant += 1
            else:
                discordant += 1
    return (concordant - discordant) / (n * (n - 1) / 2)


def summarize(
    table: str,
    rows: Sequence[Row],
    runs: Dict[Tuple[str, int], Dict[str, Any]],
    settings: Dict[str, Any],
    seeds: Sequence[int],
) -> Dict[str, Any]:
    """``results.json``: per-run records, per-row statistics, orderings and claims."""
    stats: Dict[str, _Stat] = {}
    row_out = []
    for r in rows:
        errs = [runs[(r.name, s)]["val_top1_err"] for s in seeds if (r.name, s) in runs]
        mean, std = _mean_std(errs)
        stats[r.name] = _Stat(mean, std, len(errs))
        ips = [
            runs[(r.name, s)]["images_per_s"]
            for s in seeds
            if (r.name, s) in runs and runs[(r.name, s)]["images_per_s"]
        ]
        row_out.append(
            {
                **asdict(r),
                "seeds": [s for s in seeds if (r.name, s) in runs],
                "errs": errs,
                "mean_err": mean,
                "std_err": std,
                "n_seeds": len(errs),
                "mean_images_per_s": (sum(ips) / len(ips)) if ips else None,
                "mean_train_wall_s": (
                    sum(runs[(r.name, s)]["train_wall_s"] for s in seeds if (r.name, s) in runs) / len(errs)
                )
                if errs
                else None,
            }
        )
    orderings = []
    for grp in dict.fromkeys(r.group for r in rows):
        members = [r for r in rows if r.group == grp]
        paper = _ordering(members, lambda r: r.paper_err)
        measured = _ordering(members, lambda r: stats[r.name].mean)
        orderings.append(
            {
                "group": grp,
                "paper": paper,
                "measured": measured,
                "same": paper == [x for x in measured if x in paper] and len(measured) == len(members),
                "kendall_tau": _kendall_tau(paper, measured),
            }
        )
    run_list = [runs[(r.name, s)] for s in seeds for r in rows if (r.name, s) in runs]
    # Seed noise pooled over every row of the table (the rows share the recipe and budget): with two or
    # three seeds a single row's std is itself very uncertain, the pooled one much less so.
    dof = sum(st.n - 1 for st in stats.values() if st.std is not None)
    pooled = (
        math.sqrt(sum((st.n - 1) * st.std**2 for st in stats.values() if st.std is not None) / dof) if dof > 0 else None
    )
    claims = claims_for(table, rows, stats)
    for c in claims:
        counts = c.get("seed_counts") or []
        se = (
            pooled * math.sqrt(sum(1.0 / n for n in counts))
            if pooled is not None and counts and all(n > 0 for n in counts)
            else None
        )
        c["noise_se_pooled"] = se
        c["verdict_pooled"] = judge(c["measured_gain"], se)
    return {
        "table": table,
        "settings": settings,
        "seeds": list(seeds),
        "noise_rule": f"a claim is 'reproduced' when the measured gain exceeds {NOISE_SIGMAS:g} standard errors of "
        f"the difference (unpaired, sample std over seeds), 'not reproduced' when it is that far "
        f"below 0, else 'within noise'; 'verdict_pooled' applies the same rule with the seed std "
        f"pooled over all rows of the table",
        "rows": row_out,
        "orderings": orderings,
        "pooled_seed_std": pooled,
        "pooled_seed_std_dof": dof,
        "claims": claims,
        "runs": run_list,
        "total_train_wall_s": round(sum(x["train_wall_s"] for x in run_list), 1),
        "total_wall_s": round(sum(x["wall_s"] for x in run_list), 1),
        "complete": len(run_list) == len(rows) * len(seeds),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


def _fmt(v: Optional[float], spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def results_markdown(res: Dict[str, Any]) -> str:
    s = res["settings"]
    lines = [
        f"# {res['table']}: {s['steps']} steps of batch {s['batch_size']} at {s['image_size']} px, "
        f"seeds {', '.join(map(str, res['seeds']))}",
        "",
        f"Data: `{s['data_root']}`. Paper errors are ImageNet top-1 (%) after 300k steps of batch 1024; "
        f"measured errors are validation top-1 (%) of this short run, so compare orderings and gaps, not values.",
        "",
        "| row | MFLOPs | paper err (%) | mean err (%) ± std | n seeds | per seed | images/s |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in res["rows"]:
        mean = _fmt(r["mean_err"], ".2f")
        pm = f"{mean} ± {_fmt(r['std_err'], '.2f')}" if r["std_err"] is not None else mean
        lines.append(
            f"| `{r['name']}` ({r['label']}) | {_fmt(r['paper_mflops'], 'g')} | {_fmt(r['paper_err'])} | "
            f"{pm} | {r['n_seeds']} | {', '.join(f'{e:.2f}' for e in r['errs']) or '-'} | "
            f"{_fmt(r['mean_images_per_s'], '.0f')} |"
        )
    lines += ["", "## Orderings (best first)", ""]
    for o in res["orderings"]:
        lines.append(
            f"* {o['group']}: paper {' < '.join(o['paper']) or '-'}; measured "
            f"{' < '.join(o['measured']) or '-'} -> {'same' if o['same'] else 'different'}"
            + (f" (Kendall tau {o['kendall_tau']:+.2f})" if o["kendall_tau"] is not None else "")
        )
    lines += [
        "",
        "## The paper's claims",
        "",
        "| claim | paper gain (points) | measured gain (points) | noise (1 se) | verdict "
        "| noise, pooled std (1 se) | verdict, pooled std |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for c in res["claims"]:
        lines.append(
            f"| {c['claim']} | {_fmt(c['paper_gain'])} | {_fmt(c['measured_gain'], '.2f')} | "
            f"{_fmt(c['noise_se'], '.2f')} | {c['verdict']} | {_fmt(c.get('noise_se_pooled'), '.2f')} | "
            f"{c.get('verdict_pooled', '-')} |"
        )
    pooled = res.get("pooled_seed_std")
    lines += [
        "",
        f"Rule: {res['noise_rule']}. Pooled seed std: {_fmt(pooled, '.2f')} points "
        f"({res.get('pooled_seed_std_dof', 0)} degrees of freedom).",
        "",
        f"Training wall time {res['total_train_wall_s']:.0f} s over {len(res['runs'])} runs "
        f"({'complete' if res['complete'] else 'incomplete'}).",
        "",
    ]
    return "\n".join(lines)


def plot_results(res: Dict[str, Any], path: Path) -> Path:
    """Error per row: one dot per seed, mean ± std as an error bar, the paper's error as a red x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2), 4.5))
    xs = range(len(rows))
    for i, r in enumerate(rows):
        ax.scatter(
            [i] * len(r["errs"]),
            r["errs"],
            s=14,
            color="tab:blue",
            alpha=0.55,
            zorder=3,
            label="measured, per seed" if i == 0 else None,
        )
        if r["mean_err"] is not None:
            ax.errorbar(
                [i],
                [r["mean_err"]],
                yerr=[r["std_err"] or 0.0],
                fmt="o",
                color="tab:blue",
                capsize=5,
                markersize=8,
                markerfacecolor="white",
                zorder=4,
                label="measured mean ± std" if i == 0 else None,
            )
        if r["paper_err"] is not None:
            ax.scatter(
                [i],
                [r["paper_err"]],
                marker="x",
                s=60,
                color="tab:red",
                zorder=5,
                label="paper (ImageNet)" if i == 0 else None,
            )
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["label"] for r in rows], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("top-1 error (%)")
    s = res["settings"]
    ax.set_title(
        f"{res['table']}: {s['steps']} steps x batch {s['batch_size']}, {s['image_size']} px, "
        f"{len(res['seeds'])} seeds",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    tmp = tmp_sibling(path)
    try:
        fig.savefig(tmp, format="png", dpi=120)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


def write_results(out: Path, res: Dict[str, Any]) -> None:
    write_json_atomic(res, out / "results.json")
    write_text_atomic(results_markdown(res), out / "results.md")
    plot_results(res, out / "results.png")


# --- the experiment -----------------------------------------------------------------------------------------
@dataclass
class Experiment:
    table: str
    data_root: str
    steps: int
    seeds: int = 3
    rows: Optional[Sequence[str]] = None
    widths: Optional[Sequence[float]] = None
    image_size: int = 32
    resize_size: Optional[int] = None
    batch_size: int = 64
    out: Optional[str] = None
    threads: Optional[int] = 1
    num_workers: int = 1
    accelerator: str = "auto"
    print_fn: Callable[[str], None] = field(default=print)


def _fmt_time(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return (
        f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
    )


def run_table(exp: Experiment, train_fn: Optional[Callable[..., Dict[str, Any]]] = None) -> Dict[str, Any]:
    """Run (or continue) every (row, seed) of ``exp`` interleaved; returns the results dict.

    ``train_fn(row, seed, settings, num_workers=, accelerator=)`` defaults to :func:`train_one` (a test may
    count the trainings through it)."""
    from shufflenet.classification import find_split_dirs

    if exp.steps < 1:
        raise AblationError(f"--steps must be >= 1, got {exp.steps}")
    if exp.seeds < 1:
        raise AblationError(f"--seeds must be >= 1, got {exp.seeds}")
    if exp.batch_size < 1:
        raise AblationError(f"--batch-size must be >= 1, got {exp.batch_size}")
    if exp.image_size < 8:
        raise AblationError(f"--image-size must be >= 8, got {exp.image_size}")
    root = Path(exp.data_root).expanduser()
    find_split_dirs(root)  # a missing root or a wrong layout is one error line now, not after a model build
    rows = select_rows(table_rows(exp.table, exp.widths), exp.rows)
    resize = exp.resize_size or default_resize(exp.image_size)
    if resize < exp.image_size:
        raise AblationError(f"--resize-size ({resize}) must not be smaller than --image-size ({exp.image_size})")
    settings = {
        "table": exp.table,
        "steps": exp.steps,
        "batch_size": exp.batch_size,
        "image_size": exp.image_size,
        "resize_size": resize,
        "data_root": str(root.resolve()),
        "recipe": load_recipe(),
    }
    out = Path(exp.out or Path("outputs") / "experiments" / exp.table)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    with _torch_threads(exp.threads):
        return _run_plan(exp, rows, settings, out, train_fn or train_one)


@contextlib.contextmanager
def _torch_threads(n: Optional[int]):
    """``torch.set_num_threads(n)`` for the block, the caller's count restored after it (``n`` falsy: unchanged)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _run_plan(
    exp: Experiment, rows: List[Row], settings: Dict[str, Any], out: Path, train_fn: Callable[..., Dict[str, Any]]
) -> Dict[str, Any]:
    seeds = list(range(exp.seeds))
    plan = [(r, s) for s in seeds for r in rows]  # interleaved: every row for seed 0, then seed 1, ...
    runs: Dict[Tuple[str, int], Dict[str, Any]] = {}
    for r, s in plan:
        p = run_path(out, r.name, s)
        if p.is_file():
            try:
                runs[(r.name, s)] = json.loads(p.read_text())
            except json.JSONDecodeError:  # pragma: no cover - atomic writes make this a foreign file
                p.unlink()
    todo = [(r, s) for r, s in plan if (r.name, s) not in runs]
    exp.print_fn(
        f"{exp.table}: {len(rows)} rows x {len(seeds)} seeds = {len(plan)} runs of {exp.steps} steps "
        f"(batch {exp.batch_size}, {exp.image_size} px); {len(plan) - len(todo)} already done, "
        f"{len(todo)} to run; output {out}"
    )
    done_times: List[float] = []
    for i, (r, s) in enumerate(todo, 1):
        rec = train_fn(r, s, settings, num_workers=exp.num_workers, accelerator=exp.accelerator)
        write_json_atomic(rec, run_path(out, r.name, s))
        runs[(r.name, s)] = rec
        done_times.append(rec["wall_s"])
        eta = (sum(done_times) / len(done_times)) * (len(todo) - i)
        exp.print_fn(
            f"[{len(plan) - len(todo) + i}/{len(plan)}] {r.name} seed {s}: val top-1 err "
            f"{rec['val_top1_err']:.2f} % (paper {_fmt(r.paper_err)}), {rec['wall_s']:.0f} s, "
            f"{rec['images_per_s'] or 0:.0f} images/s, ETA {_fmt_time(eta)}"
        )
        write_results(out, summarize(exp.table, rows, runs, settings, seeds))
    res = summarize(exp.table, rows, runs, settings, seeds)
    write_results(out, res)
    exp.print_fn(f"results: {out / 'results.md'}, {out / 'results.json'}, {out / 'results.png'}")
    return res


# --- command line -------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tools.ablations",
        description="Train the rows of one of the paper's ablation tables with the same budget and several "
        "seeds (interleaved, resumable); write results.json/.md/.png beside the paper's numbers.",
    )
    p.add_argument(
        "table", choices=TABLES, help="table2 (groups), table3 (channel shuffle) or table4 (units at equal complexity)"
    )
    p.add_argument(
        "--data.root",
        "--data-root",
        dest="data_root",
        required=True,
        help="ImageNet-layout folder: train/<class>/*, val/<class>/* (or test/)",
    )
    p.add_argument("--steps", type=int, required=True, help="optimizer steps per run (the same for every row)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row: 0 .. N-1 (default 3)")
    p.add_argument(
        "--rows",
        nargs="+",
        default=None,
        metavar="NAME",
        help="only these rows (model names or glob patterns, e.g. 'shufflenet_v1_x0_25_g8*')",
    )
    p.add_argument(
        "--width",
        nargs="+",
        type=float,
        default=None,
        help="table2/3: width multipliers (default 0.25 0.5); table4: MFLOPs rows (default 13 38)",
    )
    p.add_argument("--image-size", type=int, default=32, help="training and evaluation crop (default 32)")
    p.add_argument(
        "--resize-size",
        type=int,
        default=None,
        help="evaluation resize of the short side (default: the crop at <= 64 px, else x 256/224)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="batch size; the lr is scaled to it (default 64)")
    p.add_argument("--out", default=None, help="output folder (default outputs/experiments/<table>)")
    p.add_argument("--threads", type=int, default=1, help="torch compute threads (default 1)")
    p.add_argument("--num-workers", type=int, default=1, help="data loader workers per run (default 1)")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default auto)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one table from the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    run_table(
        Experiment(
            table=args.table,
            data_root=args.data_root,
            steps=args.steps,
            seeds=args.seeds,
            rows=args.rows,
            widths=args.width,
            image_size=args.image_size,
            resize_size=args.resize_size,
            batch_size=args.batch_size,
            out=args.out,
            threads=args.threads,
            num_workers=args.num_workers,
            accelerator=args.accelerator,
            print_fn=lambda line: print(line, flush=True),
        )
    )
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """:func:`main` with the project's one-line errors (``error: ...``, exit status 2)."""
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
