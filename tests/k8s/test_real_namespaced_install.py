"""A namespace-scoped install (`watchNamespaces`, issue 24 finding 2) on a real kube-apiserver: a second
release of the chart whose operator holds Roles in one namespace only, run as kopf with --namespace under
that release's ServiceAccount. Before, the only install was a ClusterRole with --all-namespaces: a
compromised operator could create Deployments (so Pods) in any namespace, kube-system included."""

from __future__ import annotations

import json

import pytest

from streamtrain.operator import children
from tests.k8s.conftest import CHART, ROOT, load_example
from tests.k8s.operator_process import Operator
from tests.waiting import eventually

pytestmark = pytest.mark.kube

RELEASE, RELEASE_NS, SERVED, OTHER = "scoped", "scoped-operator", "team-x", "team-y"


@pytest.fixture(scope="module")
def scoped(crds, tmp_path_factory):
    cp = crds
    for ns in (SERVED, OTHER):
        cp.kubectl("create", "namespace", ns)
    cp.helm(
        "install", RELEASE, str(CHART), "-n", RELEASE_NS, "--create-namespace",
        "--set", f"watchNamespaces={{{SERVED}}}", "--wait", "--timeout", "180s",
    )  # fmt: skip
    op = Operator(cp, tmp_path_factory.mktemp("scoped"), release=RELEASE, release_ns=RELEASE_NS, namespaces=(SERVED,))
    yield cp, op
    if op.proc is not None:
        op.stop()
    cp.helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", "--timeout", "120s", check=False)
    for ns in (SERVED, OTHER, RELEASE_NS):
        cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_the_scoped_operator_may_act_only_in_its_namespace(scoped):
    cp, op = scoped

    def can(verb_resource: str, ns: str | None) -> bool:
        where = ["-n", ns] if ns else ["--all-namespaces"]
        res = cp.kubectl("auth", "can-i", *verb_resource.split(), *where, check=False, kubeconfig=op.kubeconfig)
        return res.stdout.strip() == "yes"

    assert can("create deployments", SERVED) and can("patch streamingtrainings/status", SERVED)
    for ns in (OTHER, "kube-system", "default", RELEASE_NS):
        assert not can("create deployments", ns) and not can("create jobs", ns) and not can("create configmaps", ns)
        assert not can("list streamingtrainings", ns)
    assert not can("list streamingtrainings", None) and not can("create deployments", None)
    assert can("list customresourcedefinitions", None)  # kopf's CRD watch, read only


def test_the_scoped_operator_runs_a_pipeline_in_its_namespace_and_ignores_others(scoped):
    cp, op = scoped
    op.start()
    bodies = {}
    for ns in (SERVED, OTHER):
        body = {**load_example(ROOT / "examples/minimal.yaml"), "metadata": {"name": "p", "namespace": ns}}
        cp.kubectl("create", "-f", "-", input=json.dumps(body))
        bodies[ns] = json.loads(cp.kubectl("get", "streamingtraining", "p", "-n", ns, "-o", "json").stdout)

    def status(ns: str) -> dict:
        return (
            json.loads(cp.kubectl("get", "streamingtraining", "p", "-n", ns, "-o", "json").stdout).get("status") or {}
        )

    wanted = {children.key(m) for m in children.desired(bodies[SERVED]) if m["kind"] in ("Deployment", "Service")}

    def created() -> bool:
        items = json.loads(cp.kubectl("get", "deployments,services", "-n", SERVED, "-o", "json").stdout)["items"]
        return wanted <= {children.key(o) for o in items}

    eventually(created, "the pipeline's Deployments and Services in the served namespace", explain=op.output)
    # The status task lists StreamingTrainings in the served namespace only (a cluster-wide list is forbidden).
    eventually(lambda: status(SERVED).get("conditions"), "conditions written", explain=op.output)
    assert "status_round_failed" not in op.log.read_text(), op.output()
    assert status(OTHER) == {}
    assert json.loads(cp.kubectl("get", "deployments", "-n", OTHER, "-o", "json").stdout)["items"] == []
    cp.kubectl("delete", "streamingtraining", "p", "-n", SERVED, "--wait=true", "--timeout=60s")
    assert op.stop() == 0, op.output()
    assert "Traceback" not in op.output(), op.output()
