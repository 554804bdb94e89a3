"""Kubernetes tests: no cluster, no network. The operator package lives in operator/ (not importable
as ``operator``, which would shadow the standard library), so its directory goes on sys.path."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "operator"))

#: Kubernetes versions every manifest is validated against: the oldest supported, a middle one and
#: the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", "1.32.0", "1.37.0")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def load_example(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.stem)
def example(request) -> dict:
    return load_example(request.param)
