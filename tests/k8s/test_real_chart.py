"""`helm install`, `helm upgrade` and `helm test` of charts/streamtrain with a real Helm against a real
API server (the install is the session fixture ``crds``; `helm uninstall` is the last test of
test_real_operator.py). Pods run on a kwok fake node: they are scheduled, become ready and, for
run-to-completion Pods, succeed without containers; the real node is tested elsewhere."""

from __future__ import annotations

import json

import pytest

from tests.k8s.conftest import CHART, RELEASE, RELEASE_NS

pytestmark = pytest.mark.kube


def release(cp) -> dict:
    return json.loads(cp.helm("status", RELEASE, "-n", RELEASE_NS, "-o", "json").stdout)


def operator_deployment(cp) -> dict:
    name = cp.kubectl(
        "get",
        "deployment",
        "-n",
        RELEASE_NS,
        "-l",
        f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ).stdout
    return json.loads(cp.kubectl("get", "deployment", name, "-n", RELEASE_NS, "-o", "json").stdout)


def test_install_deployed_the_operator_ready_on_a_node(crds):
    rel = release(crds)
    assert rel["info"]["status"] == "deployed" and rel["version"] >= 1
    dep = operator_deployment(crds)
    assert dep["status"].get("readyReplicas") == 1, dep["status"]
    pod = json.loads(
        crds.kubectl("get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/component=operator", "-o", "json").stdout
    )["items"][0]
    assert pod["spec"]["nodeName"] and pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert "kubectl -n streamtrain" in rel["info"]["notes"] or RELEASE_NS in rel["info"]["notes"]


def test_upgrade_rolls_the_operator_with_the_new_values(crds):
    before = release(crds)["version"]
    crds.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        "operator.logLevel=DEBUG",
        "--wait",
        "--timeout",
        "180s",
    )
    assert release(crds)["version"] == before + 1
    dep = operator_deployment(crds)
    assert "--verbose" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert dep["status"].get("updatedReplicas") == 1 and dep["status"].get("readyReplicas") == 1, dep["status"]


def test_helm_test_pod_runs_under_the_operator_service_account(crds):
    res = crds.helm("test", RELEASE, "-n", RELEASE_NS, "--timeout", "120s")
    assert "Phase:          Succeeded" in res.stdout or "Succeeded" in res.stdout, res.stdout
