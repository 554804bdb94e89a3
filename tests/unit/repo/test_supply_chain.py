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


def _base_args(dockerfile: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", (REPO / dockerfile).read_text(), re.M))


def test_every_base_image_is_pinned_by_digest_and_the_java_images_share_theirs():
    """A base named by tag alone is whatever the registry serves that day; by digest it cannot change."""
    pins = {
        f: _base_args(f) for f in ("images/Dockerfile", "images/hivemq.Dockerfile", "images/scorer-streams.Dockerfile")
    }
    for dockerfile, args in pins.items():
        assert args, dockerfile
        for arg, image in args.items():
            assert re.fullmatch(r"[a-z0-9./_-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), (dockerfile, arg, image)
        text = (REPO / dockerfile).read_text()
        assert all(f"${{{arg}}}" in text for arg in args), "every pinned base is built from"
        assert not re.search(r"^FROM (?!\$\{\w+_IMAGE\})", text, re.M), "no FROM outside the pins"
    assert pins["images/hivemq.Dockerfile"] == pins["images/scorer-streams.Dockerfile"]


def test_the_stand_in_profile_names_the_pinned_tags():
    """skaffold's stand-in-bases profile (machines that build from tools/images/build.sh's stand-ins) names
    exactly the Dockerfiles' pins without their digests."""
    import yaml  # noqa: PLC0415

    pinned = {**_base_args("images/Dockerfile"), **_base_args("images/hivemq.Dockerfile")}
    tags = {arg: image.split("@", 1)[0] for arg, image in pinned.items()}
    config = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    profile = next(p for p in config["profiles"] if p["name"] == "stand-in-bases")
    named: dict[str, str] = {}
    for patch in profile["patches"]:
        if isinstance(patch["value"], dict):
            named.update(patch["value"])
        else:
            named[patch["path"].rsplit("/", 1)[1]] = patch["value"]
    assert named == tags
