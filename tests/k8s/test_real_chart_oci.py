"""The chart as users get it from a registry: `helm package` of charts/streamtrain, `helm push` to a real
OCI registry (distribution's, on loopback), `helm pull` and `helm install` from oci:// on the real API
server. What comes back is what went in: the same name and version, the same rendered manifests."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.k8s import controlplane
from tests.k8s.conftest import CHART
from tests.k8s.registry import running_registry

pytestmark = pytest.mark.kube

NS = "chart-oci"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binaries = controlplane.build(check=True, registry=True)
    workdir = tmp_path_factory.mktemp("chart-registry")
    with running_registry(binaries, workdir, workdir / "storage") as address:
        yield address


def _manifests(text: str) -> list[dict]:
    """Rendered documents without helm's ``# Source:`` comments, which name the chart's folder or archive."""
    return [d for d in yaml.safe_load_all(text) if d]


def test_the_chart_packages_pushes_pulls_and_installs_from_an_oci_registry(control_plane, registry, tmp_path):
    cp = control_plane
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    cp.helm("lint", str(CHART))
    out = cp.helm("package", str(CHART), "-d", str(tmp_path)).stdout
    archive = tmp_path / f"{meta['name']}-{meta['version']}.tgz"
    assert archive.is_file(), out

    pushed = cp.helm("push", str(archive), f"oci://{registry}/charts", "--plain-http")
    assert "Digest: sha256:" in pushed.stdout + pushed.stderr, pushed.stdout + pushed.stderr
    ref = f"oci://{registry}/charts/{meta['name']}"
    shown = yaml.safe_load(cp.helm("show", "chart", ref, "--version", meta["version"], "--plain-http").stdout)
    assert (shown["name"], shown["version"], shown["appVersion"]) == (meta["name"], meta["version"], meta["appVersion"])

    pulled_dir = tmp_path / "pulled"
    pulled_dir.mkdir()
    cp.helm("pull", ref, "--version", meta["version"], "--plain-http", "-d", str(pulled_dir))
    (pulled,) = pulled_dir.glob("*.tgz")
    args = ["--namespace", NS, "--kube-version", "1.35.0"]
    from_folder = _manifests(cp.helm("template", "st", str(CHART), *args).stdout)
    from_registry = _manifests(cp.helm("template", "st", str(pulled), *args).stdout)
    assert from_registry == from_folder
    assert {d["kind"] for d in from_registry} >= {"Deployment", "ServiceAccount", "ClusterRole"}

    # A user's install straight from the registry: the release exists with the chart's version. (The
    # CRD is installed already by the session's release: helm leaves crds/ alone when it exists.)
    cp.helm("install", "oci-st", ref, "--version", meta["version"], "--plain-http", "-n", NS, "--create-namespace")
    try:
        (release,) = json.loads(cp.helm("list", "-n", NS, "-o", "json").stdout)
        assert release["chart"] == f"{meta['name']}-{meta['version']}"
        assert release["status"] == "deployed"
        deployments = json.loads(cp.kubectl("get", "deployments", "-n", NS, "-o", "json").stdout)["items"]
        assert [d["metadata"]["name"] for d in deployments] == ["oci-st-streamtrain"]
    finally:
        cp.helm("uninstall", "oci-st", "-n", NS, check=False)
        cp.kubectl("delete", "namespace", NS, "--wait=false", check=False)
