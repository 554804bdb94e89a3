"""Managed MQTT over TLS on by default, on a real kube-apiserver with the operator under the chart's
ServiceAccount (which may only create Secrets, never read them): each pipeline gets its broker's TLS Secret
once, owned by the resource and recorded in status.createdSecrets, holding a keystore for the broker
Service's names; later reconciles keep it as it is; nothing of it reaches the operator's log. A Secret of
that name the operator did not create is neither adopted nor mounted: NameConflict, until it is gone.

Runs before test_real_operator.py, whose last test uninstalls the chart."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.k8s.conftest import ROOT, load_example
from tests.k8s.operator_process import assert_secret_kept_across_a_reconcile, running_operator
from tests.k8s.operator_process import owned as owned_in
from tests.unit.streamtrain_operator.render.test_mqtt_tls import INVALID_TLS, invalid_resource
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "mqtt-tls"


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    with running_operator(crds, tmp_path_factory.mktemp("mqtt-tls"), NS, STREAMTRAIN_OPERATOR_CONFLICT_RETRY="2") as op:
        yield crds, op


def get(cp, kind: str, name: str) -> dict | None:
    return cp.get_object(kind, name, NS)


def owned(cp, kind: str, uid: str) -> list[dict]:
    return owned_in(cp, kind, NS, uid)


def create(cp, name: str) -> str:
    body = {**load_example(ROOT / "examples/minimal.yaml"), "metadata": {"name": name, "namespace": NS}}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    return get(cp, "streamingtraining", name)["metadata"]["uid"]


def deployment(cp, uid: str, name: str) -> dict | None:
    return next((d for d in owned(cp, "deployments", uid) if d["metadata"]["name"] == name), None)


def test_the_tls_secret_is_created_once_owned_recorded_and_never_logged(operator):
    cp, op = operator
    name = "tls"
    secret_name = f"{name}-mqtt-tls"
    uid = create(cp, name)

    secret = eventually(lambda: get(cp, "secret", secret_name), f"Secret {secret_name}", explain=op.output)
    refs = secret["metadata"].get("ownerReferences") or []
    assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("StreamingTraining", name, uid)], refs
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(data) == {"keystore.p12", "keystore-password", "ca.crt"}
    _, cert, _ = pkcs12.load_key_and_certificates(data["keystore.p12"], data["keystore-password"])
    assert cert is not None
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert f"{name}-hivemq.{NS}.svc" in sans and f"{name}-hivemq" in sans
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(data["ca.crt"]))

    def recorded() -> dict | None:
        st = (get(cp, "streamingtraining", name) or {}).get("status") or {}
        # With the MQTT identities (on by default too, test_real_mqtt_users.py).
        return st if set(st.get("createdSecrets") or []) == {secret_name, f"{name}-mqtt-credentials"} else None

    eventually(recorded, "status.createdSecrets", explain=op.output)

    broker = eventually(lambda: deployment(cp, uid, f"{name}-hivemq"), "the broker Deployment", explain=op.output)
    pod = broker["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret_name]
    assert volume["secret"]["items"] == [{"key": "keystore.p12", "path": "keystore.p12"}]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["STREAMTRAIN_MQTT_KEYSTORE_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": secret_name, "key": "keystore-password"}
    }
    assert pod["containers"][0]["ports"][0]["containerPort"] == 8883
    config = get(cp, "configmap", f"{name}-hivemq")
    assert data["keystore-password"].decode() not in json.dumps(config)
    assert "${ENV:STREAMTRAIN_MQTT_KEYSTORE_PASSWORD}" in config["data"]["config.xml"]
    service = get(cp, "service", f"{name}-hivemq")
    assert service["spec"]["ports"][0]["port"] == 8883

    # A spec change reconciles again: the Secret is kept as it was (clients and devices trust its CA).
    log = assert_secret_kept_across_a_reconcile(cp, op, NS, name, uid, secret)
    for value in (*secret["data"].values(), data["keystore-password"].decode(), data["ca.crt"].decode()[30:90]):
        assert value not in log
    assert "PRIVATE KEY" not in log and "BEGIN CERTIFICATE" not in log
    events = json.loads(cp.kubectl("get", "events", "-n", NS, "-o", "json").stdout)["items"]
    assert data["keystore-password"].decode() not in json.dumps(events)
    st = get(cp, "streamingtraining", name)["status"]
    assert data["keystore-password"].decode() not in json.dumps(st)
    cp.kubectl("delete", "streamingtraining", name, "-n", NS, "--wait=true", "--timeout=60s")


def test_a_foreign_secret_with_the_name_is_neither_adopted_nor_mounted(operator):
    cp, op = operator
    name = "squatted"
    secret_name = f"{name}-mqtt-tls"
    foreign = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": NS, "labels": {"team": "b"}},
        "stringData": {"keystore.p12": "theirs", "keystore-password": "theirs", "ca.crt": "theirs"},
    }
    cp.kubectl("create", "-f", "-", input=json.dumps(foreign))
    before = get(cp, "secret", secret_name)
    uid = create(cp, name)

    def status() -> dict:
        return (get(cp, "streamingtraining", name) or {}).get("status") or {}

    def conflict() -> dict | None:
        st = status()
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "NameConflict"), None)
        return st if cond and cond["status"] == "True" and f"Secret/{secret_name}" in cond["message"] else None

    eventually(conflict, "a NameConflict condition", explain=lambda: f"{status()}\n{op.output()}")
    # The rest of the pipeline stands; nothing that would read the Secret is created.
    eventually(lambda: deployment(cp, uid, f"{name}-scorer"), "the scorer Deployment", explain=op.output)
    eventually(
        lambda: op.log.read_text().count(f"name_conflict Secret/{secret_name} exists") >= 3,
        "three reconciles meeting the conflict",
        explain=op.output,
    )
    for component in ("hivemq", "simulator", "bridge"):
        assert deployment(cp, uid, f"{name}-{component}") is None, component
    after = get(cp, "secret", secret_name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences") and after["data"] == before["data"]
    assert secret_name not in (status().get("createdSecrets") or [])
    # Stays reported by the status observer between reconciles.
    assert conflict() is not None

    # Its owner deletes it: the operator makes its own, records it, and the broker comes.
    cp.kubectl("delete", "secret", secret_name, "-n", NS)

    def ours() -> dict | None:
        s = get(cp, "secret", secret_name)
        return s if s and any(r["uid"] == uid for r in s["metadata"].get("ownerReferences") or []) else None

    eventually(ours, "the operator's own Secret", explain=op.output)
    eventually(lambda: deployment(cp, uid, f"{name}-hivemq"), "the broker Deployment", explain=op.output)

    def resolved() -> dict | None:
        st = status()
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "NameConflict"), None)
        return (
            st
            if secret_name in (st.get("createdSecrets") or []) and (cond is None or cond["status"] != "True")
            else None
        )

    eventually(resolved, "the conflict resolved", explain=lambda: f"{status()}\n{op.output()}")
    cp.kubectl("delete", "streamingtraining", name, "-n", NS, "--wait=true", "--timeout=60s")


@pytest.mark.parametrize("spec, message", INVALID_TLS, ids=range(len(INVALID_TLS)))
def test_the_api_server_refuses_tls_specs_that_cannot_work(operator, spec, message):
    cp, _ = operator
    resource = invalid_resource(spec)
    resource["metadata"] = {"name": "refused", "namespace": NS}
    res = cp.kubectl("create", "-f", "-", input=json.dumps(resource), check=False)
    assert res.returncode != 0, f"the server accepted {spec}"
    field = message.split(":")[0]
    assert field in res.stderr, res.stderr
    if "Invalid value: " in message:  # a CEL rule: the server says its message
        assert message.split("Invalid value: ")[1] in res.stderr, res.stderr


def test_the_api_server_accepts_a_secret_of_ones_own(operator):
    cp, _ = operator
    resource = invalid_resource({"mqtt": {"tls": {"secretRef": {"name": "plant-mqtt-cert"}}}})
    resource["metadata"] = {"name": "own-cert", "namespace": NS}
    cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(resource))
