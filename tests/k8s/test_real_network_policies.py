"""A pipeline's NetworkPolicies on a real kube-apiserver, applied by the operator under the chart's
ServiceAccount: accepted by the server's own validation, owned by the StreamingTraining, and pruned when
``networkPolicies.enabled`` is set false.

The server stores policies without enforcing them (no network plugin here); what they allow is tested
offline in test_network_policies.py. Runs before test_real_operator.py, whose last test uninstalls the chart."""

from __future__ import annotations

import json

import pytest

from streamtrain.operator import children
from streamtrain.operator.render import network
from tests.k8s.conftest import ROOT, load_example
from tests.k8s.operator_process import running_operator
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "guarded"
NAME = "fenced"


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    with running_operator(crds, tmp_path_factory.mktemp("network-policies"), NS) as op:
        yield op


def listed(cp, kind: str) -> list[dict]:
    out = cp.kubectl("get", kind, "-n", NS, "-l", f"app.kubernetes.io/instance={NAME}", "-o", "json").stdout
    return json.loads(out)["items"]


def test_policies_are_created_owned_and_removed_when_disabled(operator):
    cp = operator.cp
    body = load_example(ROOT / "examples/minimal.yaml")
    body["metadata"] = {"name": NAME, "namespace": NS}
    body["spec"].setdefault("training", {}).update(workers=2, schedule="0 * * * *")
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    body = json.loads(cp.kubectl("get", "streamingtraining", NAME, "-n", NS, "-o", "json").stdout)
    wanted = {m["metadata"]["name"]: m for m in children.desired(body) if m["kind"] == "NetworkPolicy"}
    assert {f"{NAME}-default-deny", f"{NAME}-metrics", f"{NAME}-mqtt", f"{NAME}-train-workers"} <= set(wanted)

    def all_there():
        have = {p["metadata"]["name"]: p for p in listed(cp, "networkpolicies")}
        return have if set(wanted) <= set(have) else None

    have = eventually(all_there, f"NetworkPolicies {sorted(wanted)}", explain=operator.output)
    uid = body["metadata"]["uid"]
    for name, policy in have.items():
        assert [(r["kind"], r["uid"]) for r in policy["metadata"]["ownerReferences"]] == [("StreamingTraining", uid)]
        # Stored as rendered: the server's validation and defaulting changed nothing we said.
        assert policy["spec"]["podSelector"] == wanted[name]["spec"]["podSelector"], name
        assert policy["spec"].get("ingress", []) == wanted[name]["spec"]["ingress"], name

    # The one-off Job's Pods carry the label the workers' policy selects them by (set by the API server).
    job = next(
        j
        for j in listed(cp, "jobs")
        if j["metadata"]["name"] in {m["metadata"]["name"] for m in children.desired(body)}
    )
    assert job["spec"]["template"]["metadata"]["labels"][network.JOB_NAME_LABEL] == job["metadata"]["name"]
    workers = have[f"{NAME}-train-workers"]["spec"]["podSelector"]["matchLabels"]
    assert workers[network.JOB_NAME_LABEL] == job["metadata"]["name"]

    cp.patch_spec(NS, NAME, {"networkPolicies": {"enabled": False}})
    eventually(lambda: not listed(cp, "networkpolicies"), "NetworkPolicies pruned", explain=operator.output)
    assert listed(cp, "deployments"), "the rest of the pipeline stays"
    cp.kubectl("delete", "streamingtraining", NAME, "-n", NS, "--wait=true", "--timeout=60s")
