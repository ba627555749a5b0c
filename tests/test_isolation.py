"""The suite's isolation: torch's process-wide settings changed by one test do not reach the next one
(``tests/conftest.py`` restores them after every test). The two tests run in this order (pytest keeps file order)."""

from __future__ import annotations

import torch

_SEEN = {}


def test_a_test_that_changes_torchs_global_settings():
    _SEEN["threads"] = torch.get_num_threads()
    _SEEN["deterministic"] = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1 if _SEEN["threads"] != 1 else 2)
    torch.use_deterministic_algorithms(not _SEEN["deterministic"])
    assert torch.get_num_threads() != _SEEN["threads"]


def test_the_next_test_sees_the_settings_from_before():
    assert _SEEN, "runs after the test above"
    assert torch.get_num_threads() == _SEEN["threads"]
    assert torch.are_deterministic_algorithms_enabled() == _SEEN["deterministic"]
