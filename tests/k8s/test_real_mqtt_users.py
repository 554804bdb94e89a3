"""Managed MQTT authenticates by default, on a real kube-apiserver with the operator under the chart's
ServiceAccount (which may only create Secrets, never read them): each pipeline without a users Secret of its
own gets <name>-mqtt-credentials once, owned by the resource and recorded in status.createdSecrets, holding
the broker's users file (hashes), the bridge's identity and the simulated fleet's passwords; each Pod
mounts only its key; later reconciles (a grown fleet too) keep it as it is; nothing of it reaches the
operator's log, Events or status. A Secret of that name the operator did not create is neither adopted
nor mounted: NameConflict.

Runs before test_real_operator.py, whose last test uninstalls the chart."""

from __future__ import annotations

import base64
import json

import pytest

from streamtrain import credentials
from tests.k8s.conftest import ROOT, load_example
from tests.k8s.operator_process import assert_secret_kept_across_a_reconcile, running_operator
from tests.k8s.operator_process import owned as owned_in
from tests.waiting import eventually

pytestmark = pytest.mark.kube

NS = "mqtt-users"


@pytest.fixture(scope="module")
def operator(crds, tmp_path_factory):
    with running_operator(
        crds, tmp_path_factory.mktemp("mqtt-users"), NS, STREAMTRAIN_OPERATOR_CONFLICT_RETRY="2"
    ) as op:
        yield crds, op


def get(cp, kind: str, name: str) -> dict | None:
    return cp.get_object(kind, name, NS)


def owned(cp, kind: str, uid: str) -> list[dict]:
    return owned_in(cp, kind, NS, uid)


def create(cp, name: str, devices: int) -> str:
    body = {**load_example(ROOT / "examples/minimal.yaml"), "metadata": {"name": name, "namespace": NS}}
    body["spec"] = {**body["spec"], "fleet": {**body["spec"].get("fleet", {}), "devices": devices}}
    cp.kubectl("create", "-f", "-", input=json.dumps(body))
    return get(cp, "streamingtraining", name)["metadata"]["uid"]


def deployment(cp, uid: str, name: str) -> dict | None:
    return next((d for d in owned(cp, "deployments", uid) if d["metadata"]["name"] == name), None)


def secret_keys(pod: dict, secret: str) -> set[str]:
    keys = {
        i["key"]
        for v in pod["volumes"]
        if v.get("secret", {}).get("secretName") == secret
        for i in v["secret"]["items"]
    }
    for c in pod["containers"]:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] == secret:
                keys.add(ref["key"])
    return keys


def test_the_users_secret_is_created_once_owned_recorded_and_never_logged(operator, tmp_path):
    cp, op = operator
    name = "auth"
    secret_name = f"{name}-mqtt-credentials"
    uid = create(cp, name, devices=3)

    secret = eventually(lambda: get(cp, "secret", secret_name), f"Secret {secret_name}", explain=op.output)
    refs = secret["metadata"].get("ownerReferences") or []
    assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("StreamingTraining", name, uid)], refs
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(data) == {"users", "username", "password", "devices"}
    (tmp_path / "devices").write_text(data["devices"])
    devices = credentials.read_device_passwords(tmp_path / "devices")
    assert list(devices) == credentials.fleet_ids(3)
    users = {line.split(":", 2)[0]: line.split(":", 2)[2] for line in data["users"].splitlines()}
    assert set(users) == {data["username"], *devices}
    assert credentials.verify_password(data["password"], users[data["username"]])
    assert all(credentials.verify_password(p, users[d]) for d, p in devices.items())

    def recorded() -> dict | None:
        st = (get(cp, "streamingtraining", name) or {}).get("status") or {}
        return st if secret_name in (st.get("createdSecrets") or []) else None

    eventually(recorded, "status.createdSecrets", explain=op.output)

    # Each Pod only its keys, nobody else any.
    want = {"hivemq": {"users"}, "bridge": {"username", "password"}, "simulator": {"devices"}}
    for component, keys in want.items():
        d = eventually(lambda c=component: deployment(cp, uid, f"{name}-{c}"), component, explain=op.output)
        assert secret_keys(d["spec"]["template"]["spec"], secret_name) == keys, component
    for d in owned(cp, "deployments", uid):
        component = d["metadata"]["labels"]["app.kubernetes.io/component"]
        if component not in want:
            assert not secret_keys(d["spec"]["template"]["spec"], secret_name), component

    # The fleet grows: a reconcile that keeps the Secret as it was (documented: never replaced).
    log = assert_secret_kept_across_a_reconcile(cp, op, NS, name, uid, secret)
    events = json.dumps(json.loads(cp.kubectl("get", "events", "-n", NS, "-o", "json").stdout)["items"])
    st = json.dumps(get(cp, "streamingtraining", name)["status"])
    for value in (data["password"], *devices.values(), *secret["data"].values(), *users.values()):
        assert value not in log and value not in events and value not in st
    assert "pbkdf2_sha256" not in log and "pbkdf2_sha256" not in events
    cp.kubectl("delete", "streamingtraining", name, "-n", NS, "--wait=true", "--timeout=60s")


def test_a_foreign_users_secret_is_neither_adopted_nor_mounted(operator):
    cp, op = operator
    name = "squat"
    secret_name = f"{name}-mqtt-credentials"
    foreign = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": NS, "labels": {"team": "b"}},
        "stringData": {"users": "bridge:bridge:theirs", "username": "bridge", "password": "theirs", "devices": "x:y"},
    }
    cp.kubectl("create", "-f", "-", input=json.dumps(foreign))
    before = get(cp, "secret", secret_name)
    uid = create(cp, name, devices=2)

    def status() -> dict:
        return (get(cp, "streamingtraining", name) or {}).get("status") or {}

    def conflict() -> dict | None:
        st = status()
        cond = next((c for c in st.get("conditions") or [] if c["type"] == "NameConflict"), None)
        return st if cond and cond["status"] == "True" and f"Secret/{secret_name}" in cond["message"] else None

    eventually(conflict, "a NameConflict condition", explain=lambda: f"{status()}\n{op.output()}")
    eventually(lambda: deployment(cp, uid, f"{name}-scorer"), "the scorer Deployment", explain=op.output)
    eventually(
        lambda: op.log.read_text().count(f"name_conflict Secret/{secret_name} exists") >= 2,
        "reconciles meeting the conflict",
        explain=op.output,
    )
    for component in ("hivemq", "simulator", "bridge"):
        assert deployment(cp, uid, f"{name}-{component}") is None, component
    after = get(cp, "secret", secret_name)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert not after["metadata"].get("ownerReferences") and after["data"] == before["data"]
    assert secret_name not in (status().get("createdSecrets") or [])
    assert "theirs" not in op.log.read_text()
    cp.kubectl("delete", "streamingtraining", name, "-n", NS, "--wait=true", "--timeout=60s")


def _minimal(**spec) -> dict:
    r = load_example(ROOT / "examples/minimal.yaml")
    r["metadata"] = {"name": "rules", "namespace": NS}
    r["spec"] = {**r["spec"], **spec}
    return r


BRIDGE = {"secretKeyRef": {"name": "b", "key": "u"}}
REFUSED = [
    (
        _minimal(mqtt={"username": BRIDGE, "password": BRIDGE}),
        "mqtt.username and mqtt.password name the bridge in your own mqtt.usersSecretRef",
    ),
    (
        _minimal(mqtt={"authentication": "none", "usersSecretRef": {"name": "u", "key": "users"}}),
        "mqtt.usersSecretRef needs a managed broker with mqtt.authentication credentials",
    ),
    (
        _minimal(fleet={"credentialsSecretRef": {"name": "d", "key": "credentials"}}),
        "fleet.credentialsSecretRef goes with your own mqtt.usersSecretRef",
    ),
    (_minimal(ingest={"preset": "sparkplug-b"}), "other presets and mappings need mqtt.authentication none"),
]


@pytest.mark.parametrize("resource, message", REFUSED, ids=range(len(REFUSED)))
def test_the_api_server_refuses_what_the_default_cannot_serve(operator, resource, message):
    cp, _ = operator
    res = cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(resource), check=False)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_the_api_server_accepts_none_named_and_an_external_broker_unset(operator):
    cp, _ = operator
    for resource in (
        _minimal(mqtt={"authentication": "none", "username": BRIDGE}, ingest={"preset": "sparkplug-b"}),
        _minimal(mqtt={"mode": "external", "host": "mqtt.example.com", "username": BRIDGE, "password": BRIDGE}),
    ):
        cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(resource))
