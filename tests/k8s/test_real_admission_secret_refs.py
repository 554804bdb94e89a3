"""A StreamingTraining may name only Secrets its author may read, on a real kube-apiserver (1.35) with the
chart's ValidatingAdmissionPolicy (``streamtrain.operator.secret_refs``) installed by the session's real
`helm install`.

Before it, a tenant who may manage StreamingTrainings but may not read another team's Secret could name
that Secret as ``mqtt.password`` with ``mqtt.host`` pointing at a broker of their own: the bridge mounts it
and sends it there. Now the API server asks its authorizer, for the requesting user, whether they may
``get`` each Secret the spec names, on every write of the spec; the operator's own writes (metadata only)
pass. Runs before test_real_operator.py, whose last test uninstalls the chart."""

from __future__ import annotations

import json

import pytest

from streamtrain.operator.secret_refs import SECRET_REFERENCES
from tests.k8s.conftest import RELEASE, ROOT, load_example
from tests.k8s.controlplane import kubeconfig
from tests.k8s.operator_process import Operator
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "refs"
TENANT = "tenant"
THEIRS, OURS = "billing-db", "fleet-mqtt"


@pytest.fixture(scope="module")
def setup(crds, tmp_path_factory):
    """A tenant ServiceAccount that may manage StreamingTrainings and read one Secret (its own) of two."""
    cp, workdir = crds, tmp_path_factory.mktemp("secret-refs")
    cp.kubectl("create", "namespace", NS)
    for secret in (THEIRS, OURS):
        cp.kubectl(
            "create",
            "secret",
            "generic",
            secret,
            "-n",
            NS,
            "--from-literal=password=s3cret",
            "--from-literal=username=u",
        )
    cp.kubectl("create", "serviceaccount", TENANT, "-n", NS)
    cp.kubectl(
        "create",
        "role",
        "pipelines",
        "-n",
        NS,
        "--verb=get,list,watch,create,update,patch,delete",
        "--resource=streamingtrainings.streamtrain.io",
    )
    cp.kubectl("create", "role", "own-secret", "-n", NS, "--verb=get", "--resource=secrets", f"--resource-name={OURS}")
    for role in ("pipelines", "own-secret"):
        cp.kubectl(
            "create", "rolebinding", f"tenant-{role}", "-n", NS, f"--role={role}", f"--serviceaccount={NS}:{TENANT}"
        )
    token = cp.kubectl("create", "token", TENANT, "-n", NS, "--duration", "2h").stdout.strip()
    tenant = workdir / "tenant.kubeconfig"
    tenant.write_text(
        kubeconfig(cp.server, cp.pki, user=f"system:serviceaccount:{NS}:{TENANT}", token=token, namespace=NS)
    )
    yield cp, tenant, workdir
    cp.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def resource(name: str, secret: str) -> dict:
    """examples/external.yaml (a broker of the author's choosing) with the bridge's MQTT identity in ``secret``."""
    body = load_example(ROOT / "examples/external.yaml")
    body["metadata"] = {"name": name, "namespace": NS}
    body["spec"]["mqtt"]["host"] = "mqtt.tenant.example"
    body["spec"]["mqtt"]["username"] = {"secretKeyRef": {"name": secret, "key": "username"}}
    body["spec"]["mqtt"]["password"] = {"secretKeyRef": {"name": secret, "key": "password"}}
    return body


def patch(cp, kubeconfig, name: str, body: dict):
    """A user's merge patch of a StreamingTraining, as that user."""
    return cp.kubectl(
        "patch",
        "streamingtraining",
        name,
        "-n",
        NS,
        "--type=merge",
        "-p",
        json.dumps(body),
        check=False,
        kubeconfig=kubeconfig,
    )


def test_the_chart_installed_the_policy_for_every_documented_field(setup):
    cp, _, _ = setup
    policy = json.loads(
        cp.kubectl("get", "validatingadmissionpolicy", f"{RELEASE}-streamtrain-secret-references", "-o", "json").stdout
    )
    expressions = " ".join(v["expression"] for v in policy["spec"]["variables"])
    for path in SECRET_REFERENCES:
        assert ".?".join(path) in expressions, path
    # The server type-checked every expression against the CRD's schema: no warning.
    assert not (policy.get("status") or {}).get("typeChecking", {}).get("expressionWarnings"), policy["status"]


def test_a_tenant_may_name_its_own_secret_and_not_another_teams(setup):
    cp, tenant, _ = setup
    refused = cp.kubectl(
        "create", "-f", "-", input=json.dumps(resource("exfil", THEIRS)), check=False, kubeconfig=tenant
    )
    assert refused.returncode != 0
    assert THEIRS in refused.stderr and f"system:serviceaccount:{NS}:{TENANT}" in refused.stderr, refused.stderr
    assert "may not read" in refused.stderr, refused.stderr
    assert cp.get_object("streamingtraining", "exfil", NS) is None

    cp.kubectl("create", "-f", "-", input=json.dumps(resource("own", OURS)), kubeconfig=tenant)
    # Another field of the spec: asked again, and the Secret is still the tenant's to read.
    assert patch(cp, tenant, "own", {"spec": {"kafka": {"partitions": 3}}}).returncode == 0
    # Pointing the password at the other team's Secret is refused; the stored object keeps the tenant's.
    swap = {"spec": {"mqtt": {"password": {"secretKeyRef": {"name": THEIRS, "key": "password"}}}}}
    res = patch(cp, tenant, "own", swap)
    assert res.returncode != 0 and THEIRS in res.stderr, res.stderr
    stored = cp.get_object("streamingtraining", "own", NS)
    assert stored["spec"]["mqtt"]["password"]["secretKeyRef"]["name"] == OURS


def test_a_resource_an_admin_made_with_any_secret_cannot_be_redirected_by_the_tenant(setup):
    """Whoever may read billing-db names it; the tenant then changing mqtt.host (to send that password to a
    broker of their own) is a write of the spec, asked about every name, and refused."""
    cp, tenant, _ = setup
    cp.kubectl("create", "-f", "-", input=json.dumps(resource("admins", THEIRS)))  # the admin may read every Secret
    move = {"spec": {"mqtt": {"host": "mqtt.evil.example"}}}
    res = patch(cp, tenant, "admins", move)
    assert res.returncode != 0 and THEIRS in res.stderr, res.stderr
    assert cp.get_object("streamingtraining", "admins", NS)["spec"]["mqtt"]["host"] == "mqtt.tenant.example"
    # Writes that leave the spec as it is (labels, the operator's annotations) are not asked.
    cp.kubectl("label", "streamingtraining", "admins", "-n", NS, "team=tenant", kubeconfig=tenant)


def test_the_operator_under_the_charts_identity_still_reconciles_such_a_resource(setup):
    """The operator may not read Secrets; its writes to the resource (kopf's annotations) and its status must
    still pass the policy."""
    cp, _, workdir = setup
    op = Operator(cp, workdir)
    op.start()
    try:
        st = eventually(
            lambda: ((cp.get_object("streamingtraining", "admins", NS) or {}).get("status") or {}).get("children"),
            "the operator reconciled the admin's resource",
        )
        assert any(c.startswith("Deployment/") for c in st), st
        assert "ValidatingAdmissionPolicy" not in op.output() and "denied" not in op.output(), op.output()[-3000:]
    finally:
        assert op.stop() == 0, op.output()
