"""The Python distribution as a user installs it: a wheel built from this tree whose metadata declares
version ranges (what another project can resolve against), while requirements.lock keeps the exact,
hash-checked versions the images and CI install, each inside its range. The wheel holds the one import
root with every program under it, and the command runs from it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import streamtrain

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _locked() -> dict[str, str]:
    out = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ", 1)[0].split("==")
            out[str(canonicalize_name(name))] = version
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = out.glob("streamtrain-*.whl")
    return built


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())


def test_the_wheel_declares_ranges_that_admit_the_locked_versions(wheel):
    locked = _locked()
    runtime = [
        Requirement(r)
        for r in _metadata(wheel).get_all("Requires-Dist")
        if 'extra == "dev"' not in r and not r.startswith("streamtrain")
    ]
    assert len(runtime) >= 20, runtime
    for req in runtime:
        ops = {spec.operator for spec in req.specifier}
        assert ops == {">=", "<"}, f"{req}: a lower and an upper bound, not a pin (the lock pins)"
        version = locked.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(version), f"the locked {req.name}=={version} is outside {req.specifier}"


def test_the_wheel_holds_every_program_under_one_import_root_and_runs(wheel, tmp_path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "streamtrain = streamtrain.cli.main:cli" in entry_points
    programs = PYPROJECT["tool"]["setuptools"]["package-dir"]
    for package in programs:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} is missing from the wheel"
    assert not [n for n in names if n.split("/")[0] not in ("streamtrain",) and ".dist-info/" not in n]
    # Installed on its own (the dependencies come from this environment), the command and the programs
    # import from the wheel, not from this tree.
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import streamtrain, streamtrain.scorer.app, streamtrain.preprocessor.app, streamtrain.operator.handlers;"
        "from streamtrain.cli.main import cli; print(streamtrain.__file__); cli(['--version'])"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    first, version = done.stdout.splitlines()[:2]
    assert Path(first).is_relative_to(site), first
    assert version == f"streamtrain, version {streamtrain.__version__}"
