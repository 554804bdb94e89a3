"""What is installed is what was locked: Python packages by hash, Maven artefacts by checksum."""

from __future__ import annotations

import re

from tests.conftest import REPO

LOCK = (REPO / "requirements.lock").read_text()


def test_every_locked_package_carries_its_hashes():
    entries = re.split(r"\n(?=[a-z0-9])", LOCK.split("\n", 2)[2])
    pins = [e for e in entries if re.match(r"^[A-Za-z0-9_.-]+==", e)]
    assert len(pins) > 50
    unhashed = [e.split()[0] for e in pins if "--hash=sha256:" not in e]
    assert not unhashed, unhashed


def test_the_install_refuses_a_package_whose_hash_differs():
    install = (REPO / ".ci" / "install").read_text()
    assert re.search(r"uv pip sync .*--require-hashes .*requirements\.lock", install)
    contributing = (REPO / "CONTRIBUTING.md").read_text()
    assert "--generate-hashes -o requirements.lock" in contributing, "the documented lock command keeps the hashes"


def test_maven_fails_on_a_checksum_mismatch_everywhere_it_resolves():
    assert "--strict-checksums" in (REPO / ".mvn" / "maven.config").read_text().split()
    for dockerfile in (REPO / "images").glob("*Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            if re.search(r"\bmvn\b", line) and line.lstrip().startswith("RUN"):
                assert "--strict-checksums" in line, f"{dockerfile.name}: {line.strip()}"
