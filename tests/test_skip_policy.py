"""The test run's skip policy (tests/skip_policy.py): a skip for a reason not on its allowlist fails the run.

Checked the way a lost install looks: real pytest runs of this repository's tests in a subprocess, with a plugin
(``-p``) that hides detectron2 or marks tests skipped as an ``importorskip`` would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from proc import run

REPO = Path(__file__).resolve().parents[1]
PASSING = "tests/test_layers.py::test_no_import_cycle"  # a quick test that passes


def _pytest(tmp_path, plugin_code: str, *args: str):
    (tmp_path / "lost_install.py").write_text(plugin_code)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTEST_ADDOPTS", None)  # CI's --junitxml is for the outer run
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "lost_install", *args]
    proc = run(cmd, cwd=REPO, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_lost_detectron2_fails_the_run(tmp_path):
    """What ``scripts/setup.sh`` losing detectron2 looks like: the detection tests fail, not skip."""
    rc, out = _pytest(
        tmp_path, 'import sys\nsys.modules["detectron2"] = None\n', "tests/test_detection_pretrained.py", PASSING
    )
    assert rc != 0, out
    assert "detectron2" in out, out


HIDE_BY_SKIP = """
import pytest

REASONS = {REASONS!r}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for name, reason in REASONS.items():
            if item.name == name:
                item.add_marker(pytest.mark.skip(reason=reason))
"""


def test_a_skip_not_on_the_allowlist_fails_the_run_and_both_kinds_are_listed(tmp_path):
    reasons = {
        "test_no_import_cycle": "could not import 'litdata': No module named 'litdata'",  # an importorskip
        "test_every_import_goes_to_the_same_floor_or_below": "needs the dali extra: pip install 'shufflenet[dali]'",
    }
    rc, out = _pytest(tmp_path, HIDE_BY_SKIP.replace("{REASONS!r}", repr(reasons)), "tests/test_layers.py")
    assert rc == 1, out
    assert "not allowed: tests/test_layers.py::test_no_import_cycle: could not import 'litdata'" in out, out
    assert "allowed (NVIDIA DALI): tests/test_layers.py::test_every_import_goes_to_the_same_floor_or_below" in out
    assert " passed" in out and " failed" not in out  # the other tests ran and passed: the skip alone fails it


def test_allowed_skips_pass_and_are_printed(tmp_path):
    reasons = {"test_no_import_cycle": "needs ncnn's ncnn2table and ncnn2int8 on PATH (built from the ncnn source)"}
    rc, out = _pytest(tmp_path, HIDE_BY_SKIP.replace("{REASONS!r}", repr(reasons)), PASSING)
    assert rc == 0, out
    assert "allowed (ncnn int8 tools): tests/test_layers.py::test_no_import_cycle" in out, out
    assert "not allowed" not in out


def test_a_module_level_importorskip_is_refused(tmp_path):
    """A skip at collection (a module-level ``importorskip``) counts like a test's own."""
    (tmp_path / "conftest.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO / 'tests')!r})\nfrom skip_policy import SkipPolicy\n\n\n"
        "def pytest_configure(config):\n    config.pluginmanager.register(SkipPolicy())\n"
    )
    (tmp_path / "test_gone.py").write_text('import pytest\n\npytest.importorskip("no_such_module_here")\n')
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 passed, 1 skipped" in out and "not allowed: test_gone.py: could not import 'no_such_module_here'" in out
