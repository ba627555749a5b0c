"""The mobile developer tools in tools/: the emulated aarch64 check's host side and the int8 report's CLI.

Fast: each case fails before any export, and checks what a user sees (one `error:` line, exit 2, nothing
created).
"""

from __future__ import annotations

from tools import mobile_aarch64 as aarch64
from tools import mobile_int8_report as int8_report

TINY = "shufflenet_v1_x0_25_g3"


def _one_error_line(capsys, expected):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_aarch64_prepare_bad_input_is_one_error_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert aarch64.cli(["prepare", str(tmp_path / "c"), "--models", "no_such_model"]) == 2
    _one_error_line(capsys, "unknown model name 'no_such_model'")
    assert aarch64.cli(["prepare", str(f), "--models", TINY]) == 2
    _one_error_line(capsys, "is a file, not a folder")
    assert aarch64.cli(["prepare", str(tmp_path / "c"), "--input-size", "8"]) == 2
    _one_error_line(capsys, "input size '8' is not valid")
    assert not (tmp_path / "c").exists()


def test_tools_are_command_line_programs():
    for mod in (aarch64, int8_report):
        assert callable(mod.cli)
