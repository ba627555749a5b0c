"""GPU readiness: ``bash scripts/gpu_check.sh [--out FILE]`` (or ``python -m tools.gpu_check``) on a CUDA machine.

Runs in a few minutes from the repository root and writes one JSON (default ``outputs/gpu_check.json``) with one
entry per check, each with its command, wall time, outcome and numbers:

* ``classification_fit``: ``classification/train.py`` on ``tests/data/cifar10`` for a few steps on one GPU with
  ``--trainer.precision bf16-mixed``, ``--model.channels_last true`` and ``--model.compile_model true``;
* ``classification_ddp``: the same (without compile) under DDP over every GPU of the machine;
* ``classification_kill_resume``: a run killed with SIGKILL once its first checkpoint is written, then resumed with
  ``--ckpt_path last`` to its last step (the step count and the resume are checked);
* ``detection_train_eval``: ``detection/train_net.py`` training iterations and ``--eval-only`` COCO evaluation on
  ``tests/data/coco`` on the GPU;
* ``train_throughput``: training images/s of ShuffleNet v1 1x (g=3) and torchvision's ShuffleNetV2 1x at the
  recipe's per-GPU batch (128: 8 GPUs x 128 = the paper's 1024), fp32 and bf16, NCHW and channels_last, through
  :func:`tools.train_benchmark.benchmark_training` (same loop, same equivalence check as on the CPU);
* ``data_loader``: the training DataLoader's images/s with as many workers as the machine has cores.

A failing check is recorded (with the end of its output) and the others still run; the exit status is 1 if any
failed. Without a CUDA device it says so in one line and exits 0, so CI can run it anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
PER_GPU_BATCH = 128  # configs/classification/base.yaml: 8 GPUs x 128 = the paper's batch of 1024

__all__ = ["main", "cli", "no_gpu_message"]


def no_gpu_message() -> Optional[str]:
    """The one line printed where there is nothing to check (None on a CUDA machine)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return None
    return "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def _run(cmd: List[str], timeout: float, env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return {
        "command": " ".join(cmd),
        "returncode": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 1),
        "output_tail": _tail(proc.stdout + proc.stderr),
    }


def _train_cmd(run_dir: Path, steps: int, *extra: str) -> List[str]:
    return [
        sys.executable,
        "classification/train.py",
        "--config",
        "configs/classification/shufflenet_v1_x0_5_g3.yaml",
        "--data.root",
        "tests/data/cifar10",
        "--data.image_size",
        "64",
        "--data.resize_size",
        "64",
        "--data.batch_size",
        "64",
        "--data.num_workers",
        str(min(8, os.cpu_count() or 1)),
        "--trainer.accelerator",
        "gpu",
        "--trainer.max_steps",
        str(steps),
        "--trainer.log_every_n_steps",
        "5",
        "--trainer.precision",
        "bf16-mixed",
        "--model.channels_last",
        "true",
        "--run_dir",
        str(run_dir),
        *extra,
    ]


def _last_step(run_dir: Path) -> Optional[int]:
    import torch

    path = run_dir / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=False).get("global_step", -1))


def check_fit(work: Path, steps: int) -> Dict[str, Any]:
    run_dir = work / "fit"
    res = _run(_train_cmd(run_dir, steps, "--trainer.devices", "1", "--model.compile_model", "true"), 900)
    res["last_step"] = _last_step(run_dir)
    res["ok"] = res["returncode"] == 0 and res["last_step"] == steps
    return res


def check_ddp(work: Path, steps: int) -> Dict[str, Any]:
    import torch

    n = torch.cuda.device_count()
    run_dir = work / "ddp"
    res = _run(_train_cmd(run_dir, steps, "--trainer.devices", str(n), "--trainer.strategy", "ddp"), 900)
    res.update(devices=n, last_step=_last_step(run_dir))
    res["ok"] = res["returncode"] == 0 and res["last_step"] == steps
    return res


def check_kill_resume(work: Path, steps: int) -> Dict[str, Any]:
    """SIGKILL once the first checkpoint is complete, then ``--ckpt_path last`` to the end."""
    run_dir = work / "kill"
    cmd = _train_cmd(run_dir, steps, "--trainer.devices", "1", "--save_every_n_steps", "5")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_at = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            time.sleep(1.0)  # the checkpoint is written atomically; let the run go on a little
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = round(time.perf_counter() - t0, 1)
            break
        time.sleep(0.2)
    out = proc.communicate(timeout=60)[0]
    step_at_kill = _last_step(run_dir)
    resumed = _run(cmd + ["--ckpt_path", "last"], 900)
    res = {
        "command": " ".join(cmd) + " ; kill -9 ; same + --ckpt_path last",
        "killed_after_s": killed_at,
        "first_run_returncode": proc.returncode,
        "first_run_output_tail": _tail(out, 1500),
        "step_at_kill": step_at_kill,
        "resume": resumed,
        "last_step": _last_step(run_dir),
    }
    res["ok"] = (
        killed_at is not None
        and step_at_kill is not None
        and 0 < step_at_kill < steps
        and resumed["returncode"] == 0
        and res["last_step"] == steps
    )
    return res


def check_detection(work: Path, iters: int) -> Dict[str, Any]:
    out = work / "detection"
    env = {**os.environ, "DETECTRON2_DATASETS": str(REPO / "tests" / "data")}
    common = ["--config", "coco_shufflenet1x_300.yaml", "--num-gpus", "1"]
    keys = [
        "MODEL.DEVICE",
        "cuda",
        "OUTPUT_DIR",
        str(out),
        "DATASETS.TRAIN",
        "('coco_2017_train',)",
        "DATASETS.TEST",
        "('coco_2017_val',)",
        "SOLVER.IMS_PER_BATCH",
        "4",
        "DATALOADER.NUM_WORKERS",
        "2",
    ]
    train = _run(
        [
            sys.executable,
            "detection/train_net.py",
            *common,
            *keys,
            "SOLVER.MAX_ITER",
            str(iters),
            "TEST.EVAL_PERIOD",
            "0",
        ],
        900,
        env,
    )
    final = out / "model_final.pth"
    evaluate = _run(
        [sys.executable, "detection/train_net.py", *common, "--eval-only", *keys, "MODEL.WEIGHTS", str(final)], 900, env
    )
    metrics = None
    if (out / "coco_eval.json").is_file():
        metrics = json.loads((out / "coco_eval.json").read_text())
    return {
        "train": train,
        "eval": evaluate,
        "coco_eval": metrics,
        "ok": train["returncode"] == 0 and evaluate["returncode"] == 0 and metrics is not None,
    }


def check_throughput(rounds: int, steps: int) -> Dict[str, Any]:
    from tools.train_benchmark import benchmark_training, model_builders, variants_for

    variants = variants_for(["v1", "v2"], ["fp32", "bf16"], ["nchw", "channels_last"], ["eager"], [])
    t0 = time.perf_counter()
    res = benchmark_training(variants, model_builders(False), PER_GPU_BATCH, 224, rounds, steps, device="cuda")
    out = {
        "batch_size": PER_GPU_BATCH,
        "size": 224,
        "images_per_s": {k: round(r["images_per_s_wall"], 1) for k, r in res["variants"].items()},
        "same_loss": {k: r.get("same_loss") for k, r in res["variants"].items()},
        "best": res["best"],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out["ok"] = all(v is not False for v in out["same_loss"].values())
    return out


def check_loader(work: Path) -> Dict[str, Any]:
    from tools.train_benchmark import loader_throughput, make_jpegs

    workers = os.cpu_count() or 1
    root, desc = make_jpegs(work / "jpegs", "photos", 64, None)
    res = loader_throughput(root, workers, batch_size=PER_GPU_BATCH, size=224, batches=6)
    return {"source": desc, **res, "ok": res["images_per_s_wall"] > 0}


def _guard(name: str, fn: Callable[[], Dict[str, Any]], log: Callable[[str], None]) -> Dict[str, Any]:
    log(f"gpu_check: {name} ...")
    t0 = time.perf_counter()
    try:
        res = fn()
    except Exception as e:  # noqa: BLE001 - one failing check is recorded, the others still run
        res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    res.setdefault("wall_s", round(time.perf_counter() - t0, 1))
    log(f"gpu_check: {name} {'ok' if res.get('ok') else 'FAILED'} ({res['wall_s']} s)")
    return res


def machine() -> Dict[str, Any]:
    import torch

    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpus": os.cpu_count(),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("outputs/gpu_check.json"), help="the JSON to write")
    p.add_argument("--steps", type=int, default=40, help="training steps of the classification checks")
    p.add_argument("--det-iters", type=int, default=20, help="training iterations of the detection check")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput check")
    args = p.parse_args(argv)
    message = no_gpu_message()
    if message is not None:
        print(message)
        return 0
    from shufflenet.fileio import write_json_atomic

    def log(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    result: Dict[str, Any] = {"machine": machine(), "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        checks = {
            "classification_fit": lambda: check_fit(work, args.steps),
            "classification_ddp": lambda: check_ddp(work, args.steps),
            "classification_kill_resume": lambda: check_kill_resume(work, args.steps),
            "detection_train_eval": lambda: check_detection(work, args.det_iters),
            "train_throughput": lambda: check_throughput(args.rounds, 5),
            "data_loader": lambda: check_loader(work),
        }
        for name, fn in checks.items():
            result["checks"][name] = _guard(name, fn, log)
            write_json_atomic(result, args.out)  # what is done so far survives a later hang
    result["ok"] = all(c.get("ok") for c in result["checks"].values())
    write_json_atomic(result, args.out)
    print(f"gpu_check: {'all checks passed' if result['ok'] else 'some checks FAILED'}; results: {args.out}")
    return 0 if result["ok"] else 1


def cli(argv: Optional[Sequence[str]] = None) -> int:
    from shufflenet.errors import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
