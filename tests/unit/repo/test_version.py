"""One version, written in streamtrain/__init__.py: the package metadata reads it, and every file that
carries it as text (chart, Java scorer pom, CRD, examples, docs) agrees — `make version` checks it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import streamtrain

REPO = Path(__file__).resolve().parents[3]
TOOL = REPO / "tools" / "version.py"
CARRIED = [
    "streamtrain/__init__.py",
    "charts/streamtrain/Chart.yaml",
    "scorer/streams/pom.xml",
    "charts/streamtrain/crds/streamingtrainings.yaml",
    "examples/full.yaml",
    "examples/secure.yaml",
    "docs/kubernetes.md",
    "images/README.md",
]


def run(tool: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, timeout=60)


def copy_of_the_repo(tmp_path: Path) -> Path:
    for name in ["tools/version.py", *CARRIED]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    return tmp_path / "tools" / "version.py"


def test_every_carrier_agrees_with_the_source() -> None:
    done = run(TOOL)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == streamtrain.__version__


def test_the_installed_metadata_reads_the_source() -> None:
    assert metadata.version("streamtrain") == streamtrain.__version__


def test_a_carrier_that_disagrees_is_named(tmp_path: Path) -> None:
    tool = copy_of_the_repo(tmp_path)
    chart = tmp_path / "charts/streamtrain/Chart.yaml"
    chart.write_text(chart.read_text().replace(f'appVersion: "{streamtrain.__version__}"', 'appVersion: "9.9.9"'))
    done = run(tool)
    assert done.returncode == 1
    assert "charts/streamtrain/Chart.yaml: 9.9.9" in done.stderr


def test_set_rewrites_the_source_and_every_carrier(tmp_path: Path) -> None:
    tool = copy_of_the_repo(tmp_path)
    done = run(tool, "set", "2.3.4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2.3.4"
    for name in CARRIED:
        text = (tmp_path / name).read_text()
        assert "2.3.4" in text and streamtrain.__version__ not in text, name
