"""The skip policy of the test run: a skip is allowed only for a reason on :data:`ALLOWED_SKIPS`.

Everything ``scripts/setup.sh`` installs (detectron2, litdata, ONNX, ncnn, ExecuTorch, OpenCV) must be there: a test
that cannot import it fails, it is not skipped. What the setup does not install -- a GPU, NVIDIA DALI, LiteRT's
converter, ncnn's int8 tools built from source, the larger data slices of ``$SHUFFLENET_DATA`` -- may skip, with a
reason that matches one line below. Any other skip (an ``importorskip`` of a lost install, say) turns the run's
exit status into 1 and is listed at the end, beside the skips that were allowed.

``tests/conftest.py`` registers :class:`SkipPolicy`; ``tests/test_skip_policy.py`` checks it on real runs.
"""

from __future__ import annotations

import re
from typing import List, Optional, Tuple

import pytest

# (what is missing, a regular expression the skip reason must match). Keep this short: each line is a promise
# the default run does not check.
ALLOWED_SKIPS: Tuple[Tuple[str, str], ...] = (
    ("no GPU", r"needs a (CUDA )?GPU|no CUDA device"),
    ("NVIDIA DALI", r"needs the dali extra"),
    ("LiteRT converter", r"needs the 'litert' extra"),
    ("ncnn int8 tools", r"needs ncnn's ncnn2table and ncnn2int8 on PATH"),
    ("larger data slices", r"needs the larger data slices: set SHUFFLENET_DATA="),
)


def allowed_reason(reason: str) -> Optional[str]:
    """The name of the allowlist line ``reason`` matches, or None."""
    for name, pattern in ALLOWED_SKIPS:
        if re.search(pattern, reason):
            return name
    return None


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: reason")
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason


class SkipPolicy:
    """Collects every skip (of a test or of a whole module at collection) and fails the run on one not allowed."""

    def __init__(self) -> None:
        self.allowed: List[Tuple[str, str, str]] = []  # (node id, allowlist line, reason)
        self.refused: List[Tuple[str, str]] = []  # (node id, reason)

    def _record(self, report) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is reported as such, not as a skip
            return
        reason = _skip_reason(report)
        name = allowed_reason(reason)
        if name is None:
            self.refused.append((report.nodeid, reason))
        else:
            self.allowed.append((report.nodeid, name, reason))

    def pytest_runtest_logreport(self, report) -> None:
        self._record(report)

    def pytest_collectreport(self, report) -> None:
        self._record(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session) -> None:
        if self.refused and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        tr = terminalreporter
        if self.allowed:
            tr.write_sep("-", f"skips allowed by tests/skip_policy.py ({len(self.allowed)})")
            for nodeid, name, reason in self.allowed:
                tr.write_line(f"allowed ({name}): {nodeid}: {reason}")
        if self.refused:
            tr.write_sep("=", f"skips NOT allowed: the run fails ({len(self.refused)})", red=True, bold=True)
            for nodeid, reason in self.refused:
                tr.write_line(f"not allowed: {nodeid}: {reason}")
            tr.write_line(
                "a skip is allowed only for a reason in tests/skip_policy.py ALLOWED_SKIPS; "
                "what scripts/setup.sh installs must import"
            )
