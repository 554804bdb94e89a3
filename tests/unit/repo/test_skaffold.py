"""skaffold.yaml against skaffold's own published JSON schema (v4beta11, vendored), plus what the
schema cannot know: the paths exist, the chart gets the built image, profiles for kind and minikube."""

from __future__ import annotations

import copy
import json

import jsonschema
import yaml

from streamtrain.operator import validate
from tests.k8s.conftest import ROOT

SCHEMA = json.loads((ROOT / "tests/k8s/schemas/skaffold/v4beta11.json").read_text())
CONFIG = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
RELEASE = next(r for r in CONFIG["deploy"]["helm"]["releases"] if r["name"] == "streamtrain")


def _errors(config: dict) -> list[str]:
    v = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(config)]


def test_validates_against_skaffold_schema():
    assert CONFIG["apiVersion"] == "skaffold/v4beta11"
    assert _errors(CONFIG) == []


def test_schema_rejects_a_typo():
    bad = copy.deepcopy(CONFIG)
    bad["deploy"]["helm"]["releases"][1]["chartPth"] = "charts/streamtrain"
    assert _errors(bad)


def test_paths_exist_and_the_operator_image_reaches_the_chart():
    values = yaml.safe_load((ROOT / "charts/streamtrain/values.yaml").read_text())
    artifact = next(a for a in CONFIG["build"]["artifacts"] if a["image"] == values["operator"]["image"]["repository"])
    assert artifact["docker"]["buildArgs"] == {"EXTRAS": "operator"}  # the operator's image carries no TensorFlow
    assert (ROOT / artifact["context"] / artifact["docker"]["dockerfile"]).is_file()
    release = RELEASE
    assert (ROOT / release["chartPath"] / "Chart.yaml").is_file()
    image = artifact["image"].replace("/", "_").replace(".", "_").replace("-", "_")
    assert release["setValueTemplates"]["operator.image.repository"] == f"{{{{.IMAGE_REPO_{image}}}}}"
    # The deployed reference is unique per build (image ID, or tag@digest when pushed): the operator rolls.
    tag = release["setValueTemplates"]["operator.image.tag"]
    assert tag == f"{{{{.IMAGE_TAG_{image}}}}}{{{{with .IMAGE_DIGEST_{image}}}}}@{{{{.}}}}{{{{end}}}}"
    for path in CONFIG["manifests"]["rawYaml"]:
        assert (ROOT / path).is_file()


def test_dev_example_runs_the_built_image():
    example = yaml.safe_load((ROOT / "examples/dev.yaml").read_text())
    assert validate.errors(example) == []
    assert example["spec"]["image"]["repository"] == CONFIG["build"]["artifacts"][0]["image"]
    assert example["spec"]["image"]["tag"] == CONFIG["build"]["tagPolicy"]["envTemplate"]["template"]
    # The fields skaffold rewrites after each build name the artifacts, and skaffold may rewrite them.
    allowed = next(a for a in CONFIG["resourceSelector"]["allow"] if a["groupKind"].startswith("StreamingTraining."))
    assert allowed["groupKind"] == f"StreamingTraining.{example['apiVersion'].split('/')[0]}"
    artifacts = {a["image"] for a in CONFIG["build"]["artifacts"]}
    for field in ("full", "lite"):
        assert f".spec.image.{field}" in allowed["image"]
        assert example["spec"]["image"][field].rsplit(":", 1)[0] in artifacts, field


def test_external_kafka_profile_drops_strimzi_and_runs_the_external_example():
    import jsonpatch

    profile = next(p for p in CONFIG["profiles"] if p["name"] == "external-kafka")
    config = jsonpatch.apply_patch(CONFIG, profile["patches"])
    assert [r["name"] for r in config["deploy"]["helm"]["releases"]] == ["streamtrain"]
    example = yaml.safe_load((ROOT / config["manifests"]["rawYaml"][0]).read_text())
    assert validate.errors(example) == [] and example["spec"]["kafka"]["mode"] == "external"
    dev = yaml.safe_load((ROOT / "examples/dev.yaml").read_text())
    assert {k: v for k, v in example["spec"].items() if k != "kafka"} == {
        k: v for k, v in dev["spec"].items() if k != "kafka"
    }


def test_strimzi_is_its_own_pinned_release_before_the_chart():
    releases = CONFIG["deploy"]["helm"]["releases"]
    assert [r["name"] for r in releases] == ["strimzi", "streamtrain"]
    assert releases[0]["remoteChart"] == "oci://quay.io/strimzi-helm/strimzi-kafka-operator"
    assert releases[0]["version"] == "1.2.0"


def test_profiles_for_kind_and_minikube():
    profiles = {p["name"]: p for p in CONFIG["profiles"]}
    assert set(profiles) >= {"kind", "minikube"}
    assert profiles["kind"]["activation"][0]["kubeContext"] == "kind-.*"
    assert profiles["minikube"]["activation"][0]["kubeContext"] == "minikube"
    for name in ("kind", "minikube"):
        assert profiles[name]["build"]["local"]["push"] is False


def test_every_image_the_dev_pipeline_runs_from_our_repository_is_built():
    """A Pod of the dev example naming an image skaffold does not build would stay in ErrImagePull."""
    from streamtrain.operator import render

    example = yaml.safe_load((ROOT / "examples/dev.yaml").read_text())
    ours = example["spec"]["image"]["repository"]
    rendered = {
        c["image"].rsplit(":", 1)[0]
        for m in render.render("dev", "streamtrain", validate.defaulted(example)["spec"])
        if m["kind"] in ("Deployment", "Job", "CronJob")
        for c in m["spec"].get("jobTemplate", m)["spec"]["template"]["spec"]["containers"]
        if c["image"].startswith(ours)
    }
    artifacts = {a["image"]: a for a in CONFIG["build"]["artifacts"]}
    assert rendered >= {ours, f"{ours}-lite"} and rendered <= set(artifacts), (rendered, set(artifacts))
    assert artifacts[f"{ours}-lite"]["docker"]["buildArgs"] == {"EXTRAS": ""}  # the base install: no TensorFlow
    assert "buildArgs" not in artifacts[ours]["docker"]  # the Dockerfile's default: every extra
