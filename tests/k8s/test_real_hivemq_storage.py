"""The managed broker's data claim and config on a real kube-apiserver, applied by the operator under the
chart's ServiceAccount: the PersistentVolumeClaim and the ConfigMap are accepted and owned, a pipeline that
started with an emptyDir (as every pipeline before the claim existed) moves to the claim in place, and the
claim is pruned when storage.size is emptied. Runs before test_real_operator.py, whose last test uninstalls
the chart."""

from __future__ import annotations

import json

import pytest

from tests.k8s.conftest import ROOT, load_example
from tests.k8s.operator_process import running_operator
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "broker-data"
NAME = "durable"


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    with running_operator(crds, tmp_path_factory.mktemp("hivemq-storage"), NS) as op:
        yield op


def get(cp, kind: str, name: str) -> dict | None:
    return cp.get_object(kind, name, NS)


def test_the_broker_moves_to_its_claim_and_back(operator):
    cp = operator.cp
    body = load_example(ROOT / "examples/minimal.yaml")
    body["metadata"] = {"name": NAME, "namespace": NS}
    body["spec"].setdefault("mqtt", {})["storage"] = {"size": ""}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    uid = json.loads(cp.kubectl("get", "streamingtraining", NAME, "-n", NS, "-o", "json").stdout)["metadata"]["uid"]

    # An emptyDir broker: no claim; its rollout stops the old Pod before it starts a new one.
    dep = eventually(
        lambda: get(cp, "deployment", f"{NAME}-hivemq"), "the broker's Deployment", explain=operator.output
    )
    no_surge = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert dep["spec"]["strategy"] == no_surge
    assert get(cp, "persistentvolumeclaim", f"{NAME}-hivemq-data") is None
    config = get(cp, "configmap", f"{NAME}-hivemq")
    assert config and "<max-packet-size>" in config["data"]["config.xml"]
    assert [(r["kind"], r["uid"]) for r in config["metadata"]["ownerReferences"]] == [("StreamingTraining", uid)]

    # A claim asked for: it appears, owned, and the running Deployment moves its data folder onto it.
    cp.patch_spec(NS, NAME, {"mqtt": {"storage": {"size": "2Gi"}}})
    claim = eventually(
        lambda: get(cp, "persistentvolumeclaim", f"{NAME}-hivemq-data"), "the data claim", explain=operator.output
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert [(r["kind"], r["uid"]) for r in claim["metadata"]["ownerReferences"]] == [("StreamingTraining", uid)]

    def moved():
        d = get(cp, "deployment", f"{NAME}-hivemq")
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]} if d else {}
        return d if "persistentVolumeClaim" in volumes.get("data", {}) else None

    dep = eventually(moved, "the broker on its claim", explain=operator.output)
    assert dep["spec"]["strategy"] == no_surge

    # Storage emptied again: the claim is pruned, the broker back on an emptyDir.
    cp.patch_spec(NS, NAME, {"mqtt": {"storage": {"size": ""}}})

    def pruned():
        # One read per check: the claim may vanish between two reads.
        claim = get(cp, "persistentvolumeclaim", f"{NAME}-hivemq-data")
        return claim is None or bool(claim["metadata"].get("deletionTimestamp"))

    eventually(pruned, "the claim pruned", explain=operator.output)
    cp.kubectl("delete", "streamingtraining", NAME, "-n", NS, "--wait=true", "--timeout=60s")
