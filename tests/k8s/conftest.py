"""Kubernetes tests: no cluster, no network. The operator is the installed package
``streamtrain.operator`` (its source lives in operator/streamtrain_operator/)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

#: Kubernetes versions every manifest is validated against: the oldest supported, a middle one and
#: the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ("1.29.0", "1.32.0", "1.37.0")
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def assert_pinned_multi_stage_non_root(text: str) -> None:
    """A Dockerfile with Maven build + JRE runtime stages: pinned bases, non-root runtime with the
    operator's UID, nothing resolved at runtime, every COPY source present in the repository."""
    import re

    from streamtrain.operator.render import objects
    for arg in ("MAVEN_IMAGE", "JRE_IMAGE"):
        base = re.search(rf"^ARG {arg}=(\S+)$", text, re.M).group(1)
        assert re.search(r":\d+\.\d+\.\d+", base) and "latest" not in base, base
    assert re.findall(r"^FROM \S+ AS (\w+)$", text, re.M) == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER \$\{UID\}:\$\{UID\}$", runtime, re.M)
    assert int(re.search(r"^ARG UID=(\d+)$", runtime, re.M).group(1)) == objects.UID
    assert "mvn" not in runtime, "the runtime stage resolves nothing"
    for line in text.splitlines():
        m = re.match(r"^COPY (?!--from)(\S+) (\S+)$", line)
        if m:
            assert (ROOT / m.group(1)).exists(), m.group(1)


def load_example(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(params=EXAMPLES, ids=lambda p: p.stem)
def example(request) -> dict:
    return load_example(request.param)


# --- A real control plane (make test-k8s): built once from the Go module proxy, started per session. ---

CHART = ROOT / "charts/streamtrain"
RELEASE, RELEASE_NS = "st", "streamtrain"
#: The Strimzi kinds the operator creates, served here from Strimzi 1.2.0's own schemas (the Strimzi
#: operator image cannot be had here, so its CRDs stand in for its installation).
STRIMZI_KINDS = {"kafka": ("Kafka", "kafkas"), "kafkanodepool": ("KafkaNodePool", "kafkanodepools"),
                 "kafkatopic": ("KafkaTopic", "kafkatopics"), "kafkauser": ("KafkaUser", "kafkausers")}


def strimzi_crds() -> list[dict]:
    out = []
    for stem, (kind, plural) in STRIMZI_KINDS.items():
        schema = json.loads((ROOT / f"tests/k8s/schemas/strimzi-1.2.0/{stem}.json").read_text())
        out.append({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                    "metadata": {"name": f"{plural}.kafka.strimzi.io"},
                    "spec": {"group": "kafka.strimzi.io", "scope": "Namespaced",
                             "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                                       "listKind": f"{kind}List"},
                             "versions": [{"name": "v1", "served": True, "storage": True,
                                           "subresources": {"status": {}},
                                           "schema": {"openAPIV3Schema": schema["openAPIV3Schema"]}}]}})
    return out


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    from tests.k8s import controlplane
    with controlplane.running(tmp_path_factory.mktemp("kube")) as cp:
        yield cp


@pytest.fixture(scope="session")
def crds(control_plane):
    """The chart installed by a real `helm install` (its crds/ folder creates the CRD) next to Strimzi's CRDs."""
    cp = control_plane
    for crd in strimzi_crds():
        cp.kubectl("create", "-f", "-", input=json.dumps(crd))
    cp.kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
               *[f"crd/{plural}.kafka.strimzi.io" for _, plural in STRIMZI_KINDS.values()])
    cp.helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace", "--wait", "--timeout", "180s")
    cp.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", "crd/streamingtrainings.streamtrain.io")
    return cp
