"""The run folder of a ``shufflenet-train`` run: where it is, who holds it, what it was started with.

:class:`RunFolder` does it for one start of ``fit`` (called by :class:`~.cli.ClassificationCLI` from LightningCLI's
``instantiate_trainer``): check the inputs, create or reopen the folder, take :class:`RunLock`, record the
settings (``config.yaml``, ``config_history/``), and remove a folder its failed start created.
:func:`resolve_run_dir` finds the folder (``--run_dir``, the run to resume, or a new ``version_N``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..fileio import pid_alive, remove_stale_tmp, tmp_sibling, write_text_atomic
from ..weights import NotAWeightsFileError, read_checkpoint
from .errors import ClassificationError

__all__ = [
    "RESUME_MAY_CHANGE",
    "RunFolder",
    "RunLock",
    "check_checkpoint",
    "flatten",
    "is_ddp_worker",
    "read_settings",
    "read_training_checkpoint",
    "resolve_run_dir",
    "settings_differ",
]


#: Settings a resume may change (everything else must equal the run's config.yaml). Prefix match on the
#: dotted key: ``trainer.max_steps`` etc. lengthen or shorten a run without changing its steps; the rest
#: only change where and how a run is logged or fed, never the numbers it computes.
RESUME_MAY_CHANGE = (
    "ckpt_path",
    "model.weights",  # a resume restores the checkpoint's weights, whatever model.weights says
    "run_dir",
    "output_root",
    "config",
    "num_threads",
    "save_every_n_steps",
    "export",
    "top_k",
    "predictions",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.min_steps",
    "trainer.min_epochs",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
    "data.num_workers",
    "data.persistent_workers",
    "data.pin_memory",
    "data.predict_root",
)


# --- run folders ---------------------------------------------------------------------------------------------
def _versions(base: Path) -> List[Tuple[int, Path]]:
    return sorted((int(m.group(1)), p) for p in base.glob("version_*") if (m := re.fullmatch(r"version_(\d+)", p.name)))


def flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists and scalars are leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def settings_differ(recorded: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """Keys (outside :data:`RESUME_MAY_CHANGE`) whose values differ, as ``key: old -> new``."""

    def free(key: str) -> bool:
        return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)

    out = []
    for key in sorted(set(recorded) | set(current)):
        if free(key):
            continue
        a, b = recorded.get(key), current.get(key)
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def read_settings(run_dir: Path) -> Optional[Dict[str, Any]]:
    """The flattened settings a run folder was started with (its ``config.yaml``), or ``None``."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    try:
        return flatten(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError) as e:
        raise ClassificationError(f"{path}: cannot read the run's recorded settings ({e})") from None


def resolve_run_dir(
    run_dir: Optional[str],
    output_root: str,
    name: str,
    ckpt_path: Optional[str],
    settings: Optional[Dict[str, Any]] = None,
    reserve: bool = True,
) -> Path:
    """The run folder: ``run_dir``, or the run to resume (``ckpt_path='last'``), or a new ``version_N``.

    With ``ckpt_path='last'`` and no ``run_dir``: the newest ``version_N`` whose recorded settings equal
    ``settings`` (outside :data:`RESUME_MAY_CHANGE`); without ``settings`` (old run folders), the newest one
    with a ``last.ckpt``. A new folder is created (reserved: two runs never share one) when ``reserve``.
    """
    if run_dir:
        return Path(run_dir).expanduser()
    base = Path(output_root).expanduser() / name
    if ckpt_path == "last":
        if settings is not None:
            nearest: Optional[Tuple[Path, List[str]]] = None
            for _, path in reversed(_versions(base)):
                recorded = read_settings(path)
                if recorded is None:
                    continue
                diff = settings_differ(recorded, settings)
                if not diff:
                    return path
                if nearest is None or len(diff) < len(nearest[1]):
                    nearest = (path, diff)
            if nearest is not None:
                raise ClassificationError(
                    f"--ckpt_path last: no run in {base} was started with these settings (nearest: "
                    f"{nearest[0].name}, differs in {'; '.join(nearest[1][:4])}); pass --run_dir to resume a run "
                    f"with its own settings, or start without --ckpt_path"
                )
        candidates = [p for _, p in _versions(base) if (p / "checkpoints" / "last.ckpt").is_file()]
        if not candidates:
            raise ClassificationError(
                f"--ckpt_path last: no {base}/version_*/checkpoints/last.ckpt to resume; pass --run_dir of the "
                f"run to resume, or start without --ckpt_path"
            )
        return candidates[-1]
    versions = _versions(base)
    n = versions[-1][0] + 1 if versions else 0
    while True:
        path = base / f"version_{n}"
        if not reserve:
            if not path.exists():
                return path
            n += 1
            continue
        try:
            path.mkdir(parents=True, exist_ok=False)  # reserve it (two runs never share a folder)
            return path
        except FileExistsError:
            n += 1
        except OSError as e:
            raise ClassificationError(f"cannot write to the run folder {path}: {e.strerror or e}") from None


class RunLock:
    """``<run>/.lock`` (pid, host, start time) held while a run writes its folder.

    A second writer is refused with the holder's pid; a lock whose process is gone (same host) is taken over.
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self.held = False

    def _record(self) -> str:
        return json.dumps(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

    def acquire(self) -> RunLock:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    holder = {}
                pid, host = holder.get("pid"), holder.get("host")
                same_host = host == socket.gethostname()
                if isinstance(pid, int) and same_host and (pid == os.getpid() or not pid_alive(pid)) or not holder:
                    print(f"taking over the stale lock {self.path} (pid {pid} is gone)", file=sys.stderr, flush=True)
                    with contextlib.suppress(FileNotFoundError):
                        self.path.unlink()
                    continue
                raise ClassificationError(
                    f"{self.path.parent} is in use by another run (pid {pid} on {host}, since "
                    f"{holder.get('started')}); wait for it to end, or choose another --run_dir"
                ) from None
            except OSError as e:
                raise ClassificationError(
                    f"cannot write to the run folder {self.path.parent}: {e.strerror or e}"
                ) from None
            with os.fdopen(fd, "w") as f:
                f.write(self._record())
            self.held = True
            return self
        raise ClassificationError(f"{self.path}: could not take the run folder's lock")

    def release(self) -> None:
        if not self.held:
            return
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        self.held = False


# --- checkpoints given on the command line ----------------------------------------------------------------------
CKPT_ACCEPTED = (
    "--ckpt_path takes a Lightning checkpoint written by shufflenet-train (RUN/checkpoints/last.ckpt or best.ckpt), "
    "or 'last' to resume the run started with the same settings"
)


def read_training_checkpoint(path: Path) -> Dict[str, Any]:
    """A ``--ckpt_path`` file read safely (tensors and plain values only), or one error line saying what the file
    is not and what is accepted (never torch's advice to load it unsafely)."""
    path = Path(path)
    try:
        ckpt = read_checkpoint(path)  # missing / damaged / objects that would run code: one WeightsError line
    except NotAWeightsFileError as e:
        raise ClassificationError(f"{e}; {CKPT_ACCEPTED}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "loops" not in ckpt:
        raise ClassificationError(
            f"{path}: not a Lightning training checkpoint (no training state); a weights file (model.pth, "
            f"converted checkpoint) cannot be resumed from; {CKPT_ACCEPTED}"
        )
    return ckpt


def check_checkpoint(path: Path, model: Any) -> Dict[str, Any]:
    """A ``--ckpt_path`` file must be a readable Lightning training checkpoint that fits the model."""
    ckpt = read_training_checkpoint(path)
    model.on_load_checkpoint(ckpt)  # architecture, classes and EMA: ClassificationError
    return ckpt


def is_ddp_worker() -> bool:
    """A process that Lightning (or torchrun / SLURM) started as a rank other than 0 of a multi-process run."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "GROUP_RANK"))


# --- the run folder of one start --------------------------------------------------------------------------------
class RunFolder:
    """The run folder of one start of ``fit``: chosen, checked, created, locked and recorded by
    :meth:`prepare` (called from :meth:`ClassificationCLI.instantiate_trainer`), released by :meth:`close`,
    and removed again by :meth:`discard_failed_start` when the start fails before its first checkpoint.

    ``main`` makes one per call and hands it to the CLI object, so nothing outlives the call.
    """

    def __init__(self) -> None:
        self.path: Optional[Path] = None
        self.created = False
        self.lock: Optional[RunLock] = None
        self.checkpoint: Optional[Path] = None
        self.resume_step: Optional[int] = None

    def prepare(
        self,
        cfg: Any,
        name: str,
        settings: Dict[str, Any],
        config_text: str,
        model: Any,
        datamodule: Any,
    ) -> Path:
        """Check every input, then create (or reopen) the run folder, lock it and record the settings."""
        datamodule.setup("fit")  # data problems (empty class folder, ...) before any folder exists
        dm = datamodule
        if dm.train_set is not None and len(dm.train_set) < dm.batch_size:
            raise ClassificationError(
                f"{dm.train_set.root} has {len(dm.train_set)} images, fewer than one batch "
                f"(data.batch_size={dm.batch_size}); lower data.batch_size"
            )
        ckpt_arg, run_arg = cfg.get("ckpt_path"), cfg.get("run_dir")
        run_dir = resolve_run_dir(run_arg, cfg.get("output_root"), name, ckpt_arg, settings=settings, reserve=False)
        recorded = read_settings(run_dir) if run_dir.is_dir() else None
        last = run_dir / "checkpoints" / "last.ckpt"
        ckpt: Optional[Path] = None
        if ckpt_arg == "last":
            if recorded is None and not last.is_file():
                raise ClassificationError(f"--ckpt_path last: {last} does not exist; nothing to resume")
            if last.is_file():
                ckpt = last
            else:
                print(
                    f"--ckpt_path last: {run_dir} has no checkpoint yet (stopped before its first one): "
                    f"starting it from step 0",
                    flush=True,
                )
        elif ckpt_arg:
            ckpt = Path(ckpt_arg).expanduser()
            inside = ckpt.resolve().parent.parent == run_dir.resolve()
            if recorded is not None and not inside:
                raise ClassificationError(
                    f"{run_dir} already holds another run; resume it with --ckpt_path last, or give a new --run_dir "
                    f"to start from {ckpt}"
                )
        elif recorded is not None or last.is_file():
            raise ClassificationError(
                f"{run_dir} already holds a run; resume it with --ckpt_path last --run_dir {run_dir}, or choose "
                f"another --run_dir"
            )
        if ckpt is not None:
            self.resume_step = int(check_checkpoint(ckpt, model).get("global_step", 0))
        if recorded is not None:
            diff = settings_differ(recorded, settings)
            if diff:
                may = [k for k in RESUME_MAY_CHANGE if k.startswith(("trainer.max", "data.num"))]
                raise ClassificationError(
                    f"{run_dir} was started with other settings: {'; '.join(diff)} (a resume may change only "
                    f"{', '.join(may)} and logging options; see docs/classification.md)"
                )

        # inputs are fine: the folder
        self.created = not run_dir.exists()
        if not run_arg and ckpt_arg is None:
            run_dir = resolve_run_dir(None, cfg.get("output_root"), name, None)  # reserve a new version_N
            self.created = True
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            tmp_sibling(run_dir / ".write_test").unlink()
        except OSError as e:
            raise ClassificationError(f"cannot write to the run folder {run_dir}: {e.strerror or e}") from None
        self.path = run_dir.resolve()
        self.lock = RunLock(self.path).acquire()
        history = self.path / "config_history"
        n = len(list(history.glob("config.*.yaml"))) if history.is_dir() else 0
        write_text_atomic(config_text, history / f"config.{n}.yaml")
        if recorded is None:
            write_text_atomic(config_text, self.path / "config.yaml")
        self.checkpoint = ckpt
        for final in ("last.ckpt", "best.ckpt"):  # temporary files of writers killed mid-write
            remove_stale_tmp(self.path / "checkpoints" / final)
        return self.path

    def for_worker(self, cfg: Any, name: str, settings: Dict[str, Any]) -> Path:
        """A DDP worker's view: the folder rank 0 resumes (found the same way, read only), or a placeholder for a
        new run (Lightning's ``ModelCheckpoint`` broadcasts rank 0's checkpoint folder; workers write no logs)."""
        ckpt_arg = cfg.get("ckpt_path")
        run_dir = resolve_run_dir(
            cfg.get("run_dir"), cfg.get("output_root"), name, ckpt_arg, settings=settings, reserve=False
        )
        if ckpt_arg == "last":
            last = run_dir / "checkpoints" / "last.ckpt"
            self.checkpoint = last if last.is_file() else None
        elif ckpt_arg:
            self.checkpoint = Path(ckpt_arg).expanduser()
        self.path = run_dir.resolve()
        return self.path

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard_failed_start(self) -> None:
        """A run folder this start created holds nothing worth keeping unless a checkpoint was written."""
        run_dir = self.path
        if run_dir is None or not self.created or not run_dir.is_dir():
            return
        if any((run_dir / "checkpoints").glob("*.ckpt")):
            return
        shutil.rmtree(run_dir, ignore_errors=True)
