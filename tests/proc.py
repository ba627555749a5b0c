"""Run a subprocess in a test and stop it only when it hangs.

A fixed wall-clock timeout measures speed, and a loaded 2-core machine trips it on a run that is merely slow (the
demo training takes about 2 minutes on a quiet one and several on a busy one). :func:`run` instead fails when the
process prints nothing -- on stdout or stderr -- for ``idle`` seconds (a deadlock, a wait that never ends), and only
past a generous overall ``cap`` otherwise. Its result is a :class:`subprocess.CompletedProcess` with text output,
like ``subprocess.run(..., capture_output=True, text=True)``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import List, Optional, Sequence

import pytest

IDLE_S = 300.0  # no output for five minutes: hung (the slowest quiet stretch, a detectron2 import under load, is ~2)
CAP_S = 3600.0  # a run that keeps printing is still stopped after an hour


def _pump(stream, chunks: List[bytes], last: List[float]) -> None:
    # Raw reads, not lines: a progress bar that redraws with "\r" is output too.
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        chunks.append(chunk)
        last[0] = time.monotonic()
    stream.close()


def _text(chunks: List[bytes]) -> str:
    return b"".join(chunks).decode("utf-8", errors="replace")


def run(
    cmd: Sequence[str],
    *,
    idle: float = IDLE_S,
    cap: float = CAP_S,
    cwd=None,
    env: Optional[dict] = None,
    input: Optional[str] = None,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` to its end and return its exit status and output; fail the test (after killing the process and
    its children) when it prints nothing for ``idle`` seconds or runs past ``cap`` seconds."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")  # a Python child's prints arrive as they happen, not at its end
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: a hang is ended with its children (DDP workers, loaders)
    )
    out: List[bytes] = []
    err: List[bytes] = []
    start = time.monotonic()
    last = [start]
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, out, last), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, err, last), daemon=True),
    ]
    for t in pumps:
        t.start()
    if input is not None:
        proc.stdin.write(input.encode())
        proc.stdin.close()
    why = None
    while proc.poll() is None:
        now = time.monotonic()
        if now - last[0] > idle:
            why = f"printed nothing for {idle:.0f} s (hung?)"
        elif now - start > cap:
            why = f"still running after {cap:.0f} s"
        if why:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            break
        time.sleep(0.2)
    for t in pumps:
        t.join(timeout=30)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, _text(out), _text(err))
    if why:
        tail = (result.stdout[-1500:] + "\n--- stderr ---\n" + result.stderr[-1500:]).strip()
        pytest.fail(f"{' '.join(proc.args[:4])} ... {why}; its last output:\n{tail}", pytrace=False)
    return result
