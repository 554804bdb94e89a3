"""The real skaffold binary renders skaffold.yaml as `skaffold dev` deploys it after a build: each
build's unique reference reaches the chart's operator and the StreamingTraining's image fields,
and the operator turns that resource into Pods running exactly those references.

skaffold is built from the Go module proxy by `make kube-build` (tools/kube/build.sh) beside helm.
`--build-artifacts` stands for a finished build (what `skaffold dev` passes on after building) and
`--offline` keeps the API server out of it: no cluster, no registry, no image build here.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from streamtrain.operator import render, validate
from tests.k8s import controlplane
from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.kube

CONFIG = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
DIGEST = "sha256:" + "0123456789abcdef" * 4


def built(image: str, n: int) -> str:
    """What skaffold records for a pushed build: tag and digest (each build a new digest)."""
    return f"{image}:dev@{DIGEST[:-1]}{n}"


def skaffold_render(tmp_path, profile: str, builds: dict[str, str]) -> list[dict]:
    bin_dir = controlplane.build(check=True)
    artifacts = tmp_path / "artifacts.json"
    artifacts.write_text(json.dumps({"builds": [{"imageName": k, "tag": v} for k, v in builds.items()]}))
    # `helm template` (what `skaffold render` runs) assumes Kubernetes 1.20 unless told, and the chart
    # needs 1.29+; `skaffold dev` and `run` install with `helm upgrade --install`, which asks the API
    # server. skaffold passes no --kube-version to template, so helm gets it here, as the server would.
    shim = tmp_path / "bin"
    shim.mkdir(exist_ok=True)
    (shim / "helm").write_text(
        f'#!/bin/sh\nfor a in "$@"; do [ "$a" = template ] && exec "{bin_dir / "helm"}" "$@" '
        f'--kube-version={controlplane.K8S_VERSION}; done\nexec "{bin_dir / "helm"}" "$@"\n'
    )
    (shim / "helm").chmod(0o755)
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "SKAFFOLD_UPDATE_CHECK": "false"}
    env["KUBECONFIG"] = str(tmp_path / "no-cluster")  # offline: nothing may reach a cluster
    done = subprocess.run(
        [str(bin_dir / "skaffold"), "render", "--offline", "-p", profile, "-a", str(artifacts)]
        + ["--digest-source=tag", "--cache-artifacts=false"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_a_build_reaches_the_operator_and_the_pipelines_pods(tmp_path):
    images = [a["image"] for a in CONFIG["build"]["artifacts"]]
    first = {image: built(image, 1) for image in images}
    manifests = skaffold_render(tmp_path, "external-kafka", first)

    operator = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "streamtrain")
    assert (
        operator["spec"]["template"]["spec"]["containers"][0]["image"]
        == first["ghcr.io/streamtrain/streamtrain-operator"]
    )
    resource = next(m for m in manifests if m["kind"] == "StreamingTraining")
    assert resource["spec"]["image"]["full"] == first["ghcr.io/streamtrain/streamtrain"]
    assert resource["spec"]["image"]["lite"] == first["ghcr.io/streamtrain/streamtrain-lite"]
    assert not any(m["kind"] == "HelmRelease" or "strimzi" in m["metadata"]["name"] for m in manifests)

    # What the operator makes of the resource skaffold applied: the programs run the new build.
    pods = {
        c["name"]: c["image"]
        for m in render.render("dev", "streamtrain", validate.defaulted(resource)["spec"])
        if m["kind"] in ("Deployment", "Job", "CronJob")
        for c in m["spec"].get("jobTemplate", m)["spec"]["template"]["spec"]["containers"]
    }
    assert pods["train"] == pods["score"] == first["ghcr.io/streamtrain/streamtrain"]
    assert pods["simulate"] == pods["bridge"] == pods["preprocess"] == first["ghcr.io/streamtrain/streamtrain-lite"]

    # The next build (a source change): new references everywhere, so Kubernetes rolls the Pods.
    second = {image: built(image, 2) for image in images}
    again = skaffold_render(tmp_path, "external-kafka", second)
    resource2 = next(m for m in again if m["kind"] == "StreamingTraining")
    assert (
        resource2["spec"]["image"]["lite"]
        == second["ghcr.io/streamtrain/streamtrain-lite"]
        != resource["spec"]["image"]["lite"]
    )
