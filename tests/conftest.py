"""Shared test fixtures: where the real data is, and one way to make a network's BatchNorm non-trivial.

The repository carries the real images its tests need (``tests/data``, see ``tests/data/README.md``) and the
package ships a few photos (``shufflenet/resources/images``). Larger slices are optional: tests that need them
are marked ``extended`` and take the ``extra_data`` fixture, which reads ``$SHUFFLENET_DATA`` and nothing else.
Treat every data folder as read-only: copy what a test changes into ``tmp_path``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Callable, List

import pytest

DATA_ENV = "SHUFFLENET_DATA"
EXTRA_DATA_REASON = f"needs the larger data slices: set {DATA_ENV}=/path/to/data (see tests/data/README.md)"
_REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    config.addinivalue_line("markers", f"extended: needs the larger data slices in ${DATA_ENV} (skipped without it)")
    # A skip for a reason not on tests/skip_policy.py's short allowlist (a lost install) fails the run.
    from skip_policy import SkipPolicy

    config.pluginmanager.register(SkipPolicy(), "shufflenet_skip_policy")


def _extra_data_dir():
    value = os.environ.get(DATA_ENV, "")
    return Path(value) if value and Path(value).is_dir() else None


def pytest_collection_modifyitems(config, items):
    """``extended`` tests are skipped, with the reason that names the setting, when ``$SHUFFLENET_DATA`` is absent."""
    if _extra_data_dir() is None:
        skip = pytest.mark.skip(reason=EXTRA_DATA_REASON)
        for item in items:
            if "extended" in item.keywords:
                item.add_marker(skip)


def _torch_global_state():
    import torch

    return {
        "num_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }


def _set_torch_global_state(state) -> None:
    import torch

    torch.set_num_threads(state["num_threads"])
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["deterministic_warn_only"])
    torch.backends.cudnn.deterministic = state["cudnn_deterministic"]
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]


@pytest.fixture(autouse=True)
def _remove_logging_handlers_a_test_added():
    """A CLI run in process (detectron2's ``setup_logger``, Lightning) attaches handlers to loggers that write to
    the stream pytest captured for that test; a later test's log record would then hit a closed stream
    ("--- Logging error ---"). Remove the handlers a test added."""
    import logging

    def snapshot():
        loggers = [logging.getLogger()] + [
            lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
        ]
        return {lg: list(lg.handlers) for lg in loggers}

    before = snapshot()
    yield
    for lg, handlers in snapshot().items():
        for h in handlers:
            if h not in before.get(lg, ()):
                lg.removeHandler(h)


@pytest.fixture(autouse=True)
def _restore_torch_global_state():
    """Every test starts with the torch settings the session started with: the intra-op thread count and the
    deterministic flags are process-wide, and an in-process call that sets them (a Trainer, a benchmark run with
    ``--threads 1``) would otherwise change the tests that run after it."""
    before = _torch_global_state()
    yield
    if _torch_global_state() != before:
        _set_torch_global_state(before)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return _REPO


@pytest.fixture(scope="session")
def test_data(repo_root) -> Path:
    """``tests/data``: the real data the repository carries. Also what ``$DETECTRON2_DATASETS`` should be (it holds
    ``coco/``), so detectron2's builtin ``coco_2017_{train,val}`` names resolve to the COCO slice."""
    return repo_root / "tests" / "data"


@pytest.fixture(scope="session")
def cifar_root(test_data) -> Path:
    """CIFAR-10 ImageFolder slice: ``train/<class>/*.jpg`` (150 per class), ``test/<class>/*.jpg`` (30 per class)."""
    return test_data / "cifar10"


@pytest.fixture(scope="session")
def coco_root(test_data) -> Path:
    """Real COCO 2017 slice laid out like ``$DETECTRON2_DATASETS/coco``: ``{train,val}2017/*.jpg`` and
    ``annotations/instances_{train,val}2017.json`` (original files; JSON filtered to those images)."""
    return test_data / "coco"


@pytest.fixture(scope="session")
def coco_datasets_root(test_data) -> Path:
    """The folder to give ``$DETECTRON2_DATASETS`` (``monkeypatch.setenv("DETECTRON2_DATASETS", str(...))``)."""
    return test_data


@pytest.fixture(scope="session")
def sample_images() -> List[Path]:
    """The package's sample photos (real JPEGs, sorted), found as package data through importlib.resources."""
    folder = Path(os.fspath(resources.files("shufflenet.resources") / "images"))
    files = sorted(p for p in folder.glob("*.jpg"))
    assert files, f"no sample photos in {folder}"
    return files


@pytest.fixture(scope="session")
def extra_data() -> Path:
    """The optional larger data folder (``cifar10/``, ``tiny_coco/``): ``$SHUFFLENET_DATA`` only; skips without it."""
    path = _extra_data_dir()
    if path is None:
        pytest.skip(EXTRA_DATA_REASON)
    return path


def _randomize_bn(model, seed: int = 0):
    """Give every BatchNorm layer random affine parameters and running statistics, so that an initialised
    network is not (close to) the identity per layer; returns ``model`` in eval mode.

    Per layer, from one ``torch.Generator`` seeded with ``seed``, in this order: weight ~ U(0.5, 1.5),
    bias ~ 0.2 N(0, 1), running_mean ~ 0.2 N(0, 1), running_var ~ U(0.5, 1.5) (the values of the helper
    tests/test_mobile_export.py carried).
    """
    from shufflenet.mobile.benchmark import trained_like_batchnorm

    trained_like_batchnorm(model, seed, shift_std=0.2)  # the same draws in the same order
    return model.eval()


@pytest.fixture(scope="session")
def randomize_bn() -> Callable:
    """``randomize_bn(model, seed=0)``: random BatchNorm parameters and statistics (see :func:`_randomize_bn`)."""
    return _randomize_bn
