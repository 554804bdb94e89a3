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
        assert re.search(r":\d+\.\d+\.\d+[^@]*@sha256:[0-9a-f]{64}$", base) and "latest" not in base, base
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
#: The Strimzi and KEDA kinds the operator creates, served here from Strimzi 1.2.0's and KEDA 2.21.0's own
#: schemas (their operators cannot run here, so their CRDs stand in for their installation).
STRIMZI_KINDS = {
    "kafka": ("Kafka", "kafkas"),
    "kafkanodepool": ("KafkaNodePool", "kafkanodepools"),
    "kafkatopic": ("KafkaTopic", "kafkatopics"),
    "kafkauser": ("KafkaUser", "kafkausers"),
}
KEDA_KINDS = {
    "scaledobject": ("ScaledObject", "scaledobjects"),
    "triggerauthentication": ("TriggerAuthentication", "triggerauthentications"),
}
FOREIGN_CRDS = {"strimzi-1.2.0": STRIMZI_KINDS, "keda-2.21.0": KEDA_KINDS}


def foreign_crds() -> list[dict]:
    out = []
    for folder, kinds in FOREIGN_CRDS.items():
        for stem, (kind, plural) in kinds.items():
            schema = json.loads((ROOT / f"tests/k8s/schemas/{folder}/{stem}.json").read_text())
            out.append(
                {
                    "apiVersion": "apiextensions.k8s.io/v1",
                    "kind": "CustomResourceDefinition",
                    "metadata": {"name": f"{plural}.{schema['group']}"},
                    "spec": {
                        "group": schema["group"],
                        "scope": "Namespaced",
                        "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                        "versions": [
                            {
                                "name": schema["version"],
                                "served": True,
                                "storage": True,
                                "subresources": {"status": {}},
                                "schema": {"openAPIV3Schema": schema["openAPIV3Schema"]},
                            }
                        ],
                    },
                }
            )
    return out


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory):
    from tests.k8s import controlplane

    # Built by `make kube-build` before pytest starts (make test-k8s does it): never inside this fixture.
    with controlplane.running(tmp_path_factory.mktemp("kube"), build_missing=False) as cp:
        yield cp


@pytest.fixture(scope="session")
def crds(control_plane):
    """The chart installed by a real `helm install` (its crds/ folder creates the CRD) next to Strimzi's and KEDA's CRDs."""
    cp = control_plane
    crds = foreign_crds()
    for crd in crds:
        cp.kubectl("create", "-f", "-", input=json.dumps(crd))
    cp.kubectl(
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        *[f"crd/{crd['metadata']['name']}" for crd in crds],
    )
    cp.helm("install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace", "--wait", "--timeout", "180s")
    cp.kubectl("wait", "--for", "condition=Established", "--timeout", "60s", "crd/streamingtrainings.streamtrain.io")
    return cp


@pytest.fixture(scope="module")
def stack(node, tmp_path_factory):
    """Kafka and HiveMQ CE on the real node's bridge gateway, where its Pods (and the test) reach them;
    ``node`` is the module's own real node."""
    from streamtrain.ports import free_port
    from streamtrain.settings import StackSettings
    from streamtrain.stack.local import LocalStack
    from tests.k8s.node import GATEWAY

    s = LocalStack(
        StackSettings(
            home=tmp_path_factory.mktemp("stack"),
            jars=ROOT / ".streamtrain/lib",
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            mqtt_port=free_port(),
            bind_host=GATEWAY,
            partitions=3,
        )
    )
    s.up()
    yield s
    s.down()
