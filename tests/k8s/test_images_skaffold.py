"""skaffold.yaml against skaffold's own schema, and a static lint of images/Dockerfile (no Docker here)."""
from __future__ import annotations

import json
import re
import tomllib

import jsonschema
import pytest
import yaml

from tests.k8s.conftest import ROOT

from streamtrain_operator import render

SKAFFOLD_SCHEMA = ROOT / "tests/k8s/schemas/skaffold/v4beta11.json"
DOCKERFILE = ROOT / "images/Dockerfile"


def skaffold_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SKAFFOLD_SCHEMA.read_text()))


def test_skaffold_yaml_validates():
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"] == "skaffold/v4beta11"
    errors = [e.message for e in skaffold_validator().iter_errors(config)]
    assert errors == []
    assert {p["name"] for p in config["profiles"]} == {"kind", "minikube"}
    release = config["deploy"]["helm"]["releases"][0]
    assert (ROOT / release["chartPath"] / "Chart.yaml").exists()
    assert all((ROOT / p).exists() for p in config["manifests"]["rawYaml"])
    art = config["build"]["artifacts"][0]
    assert (ROOT / art["docker"]["dockerfile"]).exists()


@pytest.mark.parametrize("mutate", [
    lambda c: c["build"]["artifacts"][0].update(dockerFile="x"),   # misspelt key
    lambda c: c["deploy"]["helm"]["releases"][0].pop("name"),        # required field
    lambda c: c.update(profiles=[{"name": "kind", "bogus": 1}]),
], ids=["typo", "missing-release-name", "bad-profile"])
def test_skaffold_schema_catches_mistakes(mutate):
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    mutate(config)
    assert list(skaffold_validator().iter_errors(config)), "the schema must reject this"


def dockerfile() -> str:
    return DOCKERFILE.read_text()


def test_base_images_pinned_by_digest():
    text = dockerfile()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) >= 2, "multi-stage build"
    for ref in froms:
        image = args.get(ref.strip("${}"), ref)
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image


def test_runs_as_the_non_root_uid_the_pods_expect():
    text = dockerfile()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] == str(render.UID) != "0"
    values = yaml.safe_load((ROOT / "charts/streamtrain/values.yaml").read_text())
    assert values["operator"]["podSecurityContext"]["runAsUser"] == render.UID


def test_read_only_root_and_metrics_port():
    text = dockerfile()
    assert "PYTHONDONTWRITEBYTECODE=1" in text and "TMPDIR=/tmp" in text
    assert re.search(rf"^EXPOSE {render.METRICS_PORT}$", text, re.M)
    assert f"STREAMTRAIN_METRICS_PORT={render.METRICS_PORT}" in text
    assert not re.search(r"^ADD https?://", text, re.M), "no unpinned downloads"


def test_image_carries_every_package_and_the_operator():
    text = dockerfile()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert re.search(rf"^COPY {package} ", text, re.M), f"{package} not copied into the image"
    assert "COPY operator /app/operator" in text  # the chart runs /app/operator/main.py
    assert "requirements.lock" in text  # the one lock, no per-image requirements
