"""Packaging: the pins agree between pyproject.toml and environment.yml; torch.hub and timm see every name."""

import importlib.util
import re
import tomllib
from pathlib import Path

import timm
import torch
import yaml

import shufflenet

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*==\s*([^\s;]+)\s*", line)
        assert m, f"not an exact pin: {line!r}"
        pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    return pins


def test_pyproject_and_environment_yml_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in ("detection", "mobile", "dev"):
        deps += project["optional-dependencies"][extra]
    py_pins = _pins(deps)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    yml_pins = _pins([p for p in pip_section if not p.startswith("-e")])
    assert py_pins == yml_pins
    assert py_pins["torch"] == "2.12.0" and py_pins["torchvision"] == "0.27.0"
    assert "python=3.11" in env["dependencies"]
    # the environment is the one installed here
    assert torch.__version__.split("+")[0] == py_pins["torch"]


def test_torch_hub_local_and_timm_know_every_name():
    names = shufflenet.list_models()
    assert len(names) >= 40
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    assert all(callable(getattr(hubconf, n, None)) for n in names)
    model = torch.hub.load(str(ROOT), "shufflenet_v1_x0_25_g8", source="local", num_classes=3)
    assert isinstance(model, shufflenet.ShuffleNetV1) and model.fc.out_features == 3
    assert set(names) <= set(timm.list_models("*"))


def test_top_level_builder_signature():
    model = shufflenet.shufflenet_v1(groups=2, width_mult=0.5, weights=None, num_classes=4, se=True)
    assert model.groups == 2 and model.se and model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
