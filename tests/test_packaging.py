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


def _constraints():
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    return _pins([ln for ln in lines if ln and not ln.startswith("#")])


def _console_scripts():
    """``[project.scripts]`` of pyproject.toml: ``{command: "module:function"}`` (new entries are included)."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_every_console_script_target_resolves():
    """Each ``[project.scripts]`` entry names an importable module and a callable in it."""
    import importlib

    scripts = _console_scripts()
    assert len(scripts) >= 7
    for command, target in scripts.items():
        module, _, attr = target.partition(":")
        assert attr, f"{command} = {target!r}: no function named"
        func = getattr(importlib.import_module(module), attr, None)
        assert callable(func), f"{command} = {target!r}: {attr} is not a callable of {module}"


def test_constraints_environment_yml_and_pyproject_agree():
    """constraints.txt holds exact versions; environment.yml lists the same; pyproject declares ranges that each
    pin satisfies, and only ranges (a library must not demand exact versions of a user's environment)."""
    from packaging.requirements import Requirement

    pins = _constraints()
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    # what setup installs without dependencies is pinned in constraints.txt and left out of environment.yml, whose
    # pip section resolves dependencies (they would downgrade the stack)
    nodeps = [ln.strip().lower() for ln in (ROOT / "scripts/litert-nodeps.txt").read_text().splitlines() if ln.strip()]
    nodeps = [n for n in nodeps if not n.startswith("#")]
    assert nodeps and set(nodeps) <= set(pins), f"scripts/litert-nodeps.txt names unpinned {set(nodeps) - set(pins)}"
    assert _pins([p for p in pip_section if not p.startswith("-e")]) == {
        k: v for k, v in pins.items() if k not in nodeps
    }
    assert "python=3.11" in env["dependencies"]
    assert pins["torch"] == "2.12.0" and pins["torchvision"] == "0.27.0"

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    for line in declared:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert not any(s.operator in ("==", "===") for s in req.specifier), f"pyproject pins {line!r}: use a range"
        assert name in pins, f"{name} is declared in pyproject.toml but has no tested version in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"constraints.txt {name}=={pins[name]} !~ {line}"
    # the environment is the one installed here
    assert torch.__version__.split("+")[0] == pins["torch"]


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


def test_wheel_installs_and_its_console_scripts_run_outside_the_repo(tmp_path):
    """`pip install .` (not editable) gives a working package: package data through importlib.resources and
    console scripts, run from a folder outside the repository. The new venv reuses this venv's pinned
    stack through a path entry (no download); the wheel's own `shufflenet` comes first on sys.path."""
    import os
    import subprocess
    import sys
    import sysconfig
    import zipfile

    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheel_dir.glob("shufflenet-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "shufflenet/configs/detection/coco_shufflenet2x.yaml" in names
    assert "shufflenet/configs/classification/base.yaml" in names
    assert "shufflenet/resources/paper_tables.json" in names
    assert any(n.startswith("shufflenet/resources/images/") and n.endswith(".jpg") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the test venv's packages (torch, timm, ...) after the new venv's own site-packages
    (Path(site) / "_test_stack.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHUFFLENET_DATA")}
    # --force-reinstall: pip would otherwise take the test venv's (editable) shufflenet, visible through the
    # path entry above, as already installed
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(vpy),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--force-reinstall",
            str(wheel),
        ],
        check=True,
        env=env,
    )

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = subprocess.run(
        [
            str(vpy),
            "-c",
            "import shufflenet, shufflenet.paths as p; print(shufflenet.__file__); "
            "print(len(list(p.configs_dir('detection').glob('*.yaml')))); print(len(p.sample_images()))",
        ],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    probe = run.stdout.split()
    assert probe[0].startswith(str(venv)), f"imported {probe[0]}, not the installed wheel"
    assert int(probe[1]) >= 10 and int(probe[2]) >= 3

    flops = subprocess.run(
        [str(venv / "bin" / "shufflenet-flops"), "--models", "shufflenet_v1_x0_5_g3", "--json", "flops.json"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert flops.returncode == 0, flops.stderr[-2000:]
    report = __import__("json").loads((outside / "flops.json").read_text())
    assert report["all_within_bounds"] and "shufflenet_v1_x0_5_g3" in flops.stdout

    bad = subprocess.run(
        [str(venv / "bin" / "shufflenet-convert"), str(outside / "missing.pth"), "--out", "x.pth"],
        cwd=outside,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert not (outside / "x.pth").exists()

    # every console script of pyproject.toml is installed and answers --help (started together: each one's time is
    # mostly importing torch and friends)
    scripts = _console_scripts()
    procs = {
        command: subprocess.Popen(
            [str(venv / "bin" / command), "--help"],
            cwd=outside,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in scripts
    }
    failed = []
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=3600)  # a hang cap only
        if proc.returncode != 0 or "usage" not in out.lower():
            failed.append(f"{command} --help: exit {proc.returncode}\n{out[-500:]}{err[-1500:]}")
    assert not failed, "\n".join(failed)
