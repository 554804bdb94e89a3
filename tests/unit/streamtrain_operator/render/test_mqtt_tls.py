"""spec.mqtt.tls, rendered and checked offline: the managed broker listens with TLS only on 8883 (the
Service, probes and NetworkPolicy follow), reads its keystore as one read-only file and its password from
the Secret through its environment (config.xml names only a placeholder), and the simulator and the bridge
get only the CA certificate and STREAMTRAIN_MQTT_CA_FILE. The operator's Secret holds a keystore HiveMQ's
Java reads (checked on the real broker in tests/ingest/test_operator_mqtt_tls_e2e.py), for the Service's
names only."""

from __future__ import annotations

import base64
import copy
import json
import re
import xml.etree.ElementTree as ET

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from streamtrain.mqtt import MqttTls, hivemq_config_xml
from streamtrain.operator import children, handlers, mqtt_tls, render, validate
from streamtrain.operator.render import hivemq, network
from streamtrain.operator.render import mqtt_tls as render_tls
from streamtrain.operator.render.connections import mqtt_endpoint
from tests.k8s.conftest import ROOT, load_example

NS = "pipelines"


def _resource(example: str = "minimal", change=None) -> dict:
    r = load_example(ROOT / f"examples/{example}.yaml")
    if change:
        change(r["spec"])
    assert validate.errors(r) == []
    return r


def _render(example: str = "minimal", change=None) -> tuple[str, dict, list[dict]]:
    r = _resource(example, change)
    spec = validate.defaulted(r)["spec"]
    return r["metadata"]["name"], spec, render.render(r["metadata"]["name"], NS, spec)


def _deployment(kids: list[dict], component: str) -> dict:
    return next(m for m in kids if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-" + component))


def _container(kids: list[dict], component: str) -> dict:
    return _deployment(kids, component)["spec"]["template"]["spec"]["containers"][0]


def _secret_refs(node) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        if isinstance(node.get("secretKeyRef"), dict):
            found.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
        if isinstance(node.get("secret"), dict):
            found |= {(node["secret"]["secretName"], i["key"]) for i in node["secret"].get("items", [])}
        for v in node.values():
            found |= _secret_refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _secret_refs(v)
    return found


def _tls_off(spec: dict) -> None:
    spec.setdefault("mqtt", {})["tls"] = {"enabled": False}


# --- defaults and ports ------------------------------------------------------------------------------------


def test_tls_is_on_by_default_on_8883_and_off_brings_back_1883():
    name, spec, kids = _render()
    assert spec["mqtt"]["tls"] == {"enabled": True} and "port" not in spec["mqtt"]
    assert render_tls.secret_name(name, spec) == f"{name}-mqtt-tls" and render_tls.operator_made(spec)
    for tls, port in ((True, 8883), (False, 1883)):
        name, spec, kids = _render(change=None if tls else _tls_off)
        c = _container(kids, "hivemq")
        assert c["ports"][0] == {"name": "mqtt", "containerPort": port, "protocol": "TCP"}
        assert c["readinessProbe"]["tcpSocket"]["port"] == c["livenessProbe"]["tcpSocket"]["port"] == "mqtt"
        svc = next(m for m in kids if m["kind"] == "Service" and m["metadata"]["name"] == f"{name}-hivemq")
        assert svc["spec"]["ports"] == [{"name": "mqtt", "port": port, "targetPort": "mqtt", "protocol": "TCP"}]
        policy = next(m for m in kids if m["kind"] == "NetworkPolicy" and m["metadata"]["name"].endswith("-mqtt"))
        assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [port]
        for program in ("simulator", "bridge"):
            env = {e["name"]: e.get("value") for e in _container(kids, program)["env"]}
            assert env["STREAMTRAIN_MQTT_PORT"] == str(port)
            assert env["STREAMTRAIN_MQTT_HOST"] == f"{name}-hivemq"
            assert ("STREAMTRAIN_MQTT_CA_FILE" in env) is tls
        assert network.network_policies  # the policy above is rendered by render.network


def test_a_port_of_ones_own_is_the_services_and_the_listener_stays_on_its_container_port():
    name, spec, kids = _render(change=lambda s: s.setdefault("mqtt", {}).update(port=443))
    svc = next(m for m in kids if m["kind"] == "Service" and m["metadata"]["name"] == f"{name}-hivemq")
    assert svc["spec"]["ports"][0]["port"] == 443 and svc["spec"]["ports"][0]["targetPort"] == "mqtt"
    assert _container(kids, "hivemq")["ports"][0]["containerPort"] == 8883
    assert mqtt_endpoint(name, spec) == (f"{name}-hivemq", 443)


def test_an_external_broker_keeps_its_port_and_gets_no_tls_of_ours():
    for change in (None, lambda s: s["mqtt"].pop("port")):
        name, spec, kids = _render("external", change)
        assert spec["mqtt"]["tls"]["enabled"] is True  # the default, which concerns only a managed broker
        assert not render_tls.enabled(spec) and render_tls.secret_name(name, spec) is None
        assert mqtt_endpoint(name, spec) == ("mqtt.plant.example.com", 8883 if change is None else 1883)
        assert not any(ref[0] == f"{name}-mqtt-tls" for m in kids for ref in _secret_refs(m))
        assert not any(m["metadata"]["name"] == f"{name}-hivemq" for m in kids)


# --- the broker ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "example, image",
    [("minimal", "stock"), ("minimal", "launcher"), ("secure", "launcher"), ("ingest-extension", "launcher")],
)
def test_the_broker_runs_a_tls_only_listener_with_the_keystore_file_and_the_password_from_its_env(example, image):
    # The stock image runs only with authentication none (the managed broker's default is credentials).
    no_auth = (lambda s: s.setdefault("mqtt", {}).update(authentication="none")) if image == "stock" else None
    name, spec, kids = _render(example, no_auth)
    secret = f"{name}-mqtt-tls"
    cm = next(m for m in kids if m["kind"] == "ConfigMap" and m["metadata"]["name"] == f"{name}-hivemq")
    text = cm["data"]["config.xml"]
    keystore = f"{render_tls.KEYSTORE_MOUNT}/keystore.p12"
    # One writer of the XML: the same function with the keystore's path and the placeholder.
    assert text == hivemq_config_xml(8883, "0.0.0.0", tls=(keystore, "${ENV:STREAMTRAIN_MQTT_KEYSTORE_PASSWORD}"))
    root = ET.fromstring(text)
    assert root.find("listeners/tcp-listener") is None
    listener = root.find("listeners/tls-tcp-listener")
    assert listener.findtext("port") == "8883" and listener.findtext("bind-address") == "0.0.0.0"
    assert listener.findtext("tls/keystore/path") == keystore
    assert listener.findtext("tls/keystore/password") == "${ENV:STREAMTRAIN_MQTT_KEYSTORE_PASSWORD}"
    assert listener.findtext("tls/keystore/private-key-password") == "${ENV:STREAMTRAIN_MQTT_KEYSTORE_PASSWORD}"

    dep = _deployment(kids, "hivemq")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"].startswith("hivemq/hivemq-ce:") == (image == "stock")
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret]
    assert volume["secret"]["items"] == [{"key": "keystore.p12", "path": "keystore.p12"}]  # only that key
    assert volume["secret"]["defaultMode"] & 0o222 == 0
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": render_tls.KEYSTORE_MOUNT, "readOnly": True}
    (password,) = [e for e in c["env"] if e["name"] == "STREAMTRAIN_MQTT_KEYSTORE_PASSWORD"]
    assert password == {
        "name": "STREAMTRAIN_MQTT_KEYSTORE_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": secret, "key": "keystore-password"}},
    }
    assert {r for r in _secret_refs(pod) if r[0] == secret} == {(secret, "keystore.p12"), (secret, "keystore-password")}
    # A changed listener restarts the broker (the config hash in the Pod template).
    off = _deployment(_render(example, _tls_off)[2], "hivemq")
    key = "streamtrain.io/config-hash"
    assert (
        off["spec"]["template"]["metadata"]["annotations"][key]
        != dep["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_no_password_is_written_anywhere_the_operator_renders():
    """Every ConfigMap and every literal env value of every example: no keystore password, no key material;
    the only mention of the password variable is a Secret reference and config.xml's placeholder."""
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        r = load_example(path)
        spec = validate.defaulted(r)["spec"]
        kids = render.render(r["metadata"]["name"], NS, spec)
        text = json.dumps(kids)
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, path.name
        for m in kids:
            if m["kind"] == "ConfigMap":
                for value in m["data"].values():
                    for pw in ET.fromstring(value).iter("password") if value.startswith("<?xml") else []:
                        assert pw.text == render_tls.PASSWORD_PLACEHOLDER, path.name
            for c in (m.get("spec", {}).get("template", {}).get("spec", {}) or {}).get("containers", []):
                for e in c.get("env", []):
                    if e["name"] == render_tls.PASSWORD_ENV:
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], path.name
    assert "Secret" not in {m["kind"] for m in kids}  # the operator's Secret is made apart, never rendered


# --- the clients -------------------------------------------------------------------------------------------


def test_the_simulator_and_the_bridge_get_only_the_ca_and_the_setting_that_names_it(tmp_path, monkeypatch):
    name, spec, kids = _render()
    secret = f"{name}-mqtt-tls"
    for component in ("simulator", "bridge"):
        pod = _deployment(kids, component)["spec"]["template"]["spec"]
        c = pod["containers"][0]
        (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret]
        assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        env = {e["name"]: e for e in c["env"]}
        assert env["STREAMTRAIN_MQTT_CA_FILE"] == {
            "name": "STREAMTRAIN_MQTT_CA_FILE",
            "value": f"{mount['mountPath']}/ca.crt",
        }
        assert {r for r in _secret_refs(pod) if r[0] == secret} == {(secret, "ca.crt")}
        # What the program reads: MqttTls, under its own name.
        monkeypatch.setenv("STREAMTRAIN_MQTT_CA_FILE", str(tmp_path / "ca.crt"))
        (tmp_path / "ca.crt").write_text("PEM")
        assert MqttTls.from_env().ca_file == tmp_path / "ca.crt"
        # The host the client connects to is a name of the certificate.
        assert env["STREAMTRAIN_MQTT_HOST"]["value"] in render_tls.service_hosts(name, NS)
    for m in kids:
        if m["kind"] in ("Deployment", "Job", "CronJob") and not m["metadata"]["name"].endswith(
            ("-hivemq", "-simulator", "-bridge")
        ):
            assert not any(r[0] == secret for r in _secret_refs(m)), m["metadata"]["name"]


def test_a_secret_of_ones_own_replaces_the_generated_one():
    def own(spec):
        spec.setdefault("mqtt", {})["tls"] = {
            "secretRef": {"name": "plant-mqtt-cert", "passwordSecretRef": {"name": "plant-mqtt-pw", "key": "password"}}
        }

    name, spec, kids = _render(change=own)
    assert not render_tls.operator_made(spec) and render_tls.secret_name(name, spec) == "plant-mqtt-cert"
    refs = set().union(*(_secret_refs(m) for m in kids))
    assert {("plant-mqtt-cert", "keystore.p12"), ("plant-mqtt-cert", "ca.crt"), ("plant-mqtt-pw", "password")} <= refs
    assert not any(r[0] == f"{name}-mqtt-tls" for r in refs)
    assert ("plant-mqtt-cert", "keystore-password") not in refs

    def same_secret(spec):
        spec.setdefault("mqtt", {})["tls"] = {"secretRef": {"name": "plant-mqtt-cert"}}

    _, _, kids = _render(change=same_secret)
    env = _container(kids, "hivemq")["env"]
    (pw,) = [e for e in env if e["name"] == render_tls.PASSWORD_ENV]
    assert pw["valueFrom"]["secretKeyRef"] == {"name": "plant-mqtt-cert", "key": "keystore-password"}


# --- the operator's Secret -----------------------------------------------------------------------------------


def test_the_generated_secret_holds_a_keystore_for_the_service_names_and_the_ca_that_signed_it():
    secret = mqtt_tls.new_secret("plant", "factory")
    assert secret["kind"] == "Secret" and secret["metadata"]["name"] == "plant-mqtt-tls"
    assert secret["metadata"]["namespace"] == "factory"
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert set(data) == {"keystore.p12", "keystore-password", "ca.crt"}
    password = data["keystore-password"]
    # HiveMQ puts it into config.xml's text before parsing it: only characters XML takes as they are.
    assert len(password) >= 32 and re.fullmatch(rb"[A-Za-z0-9_-]+", password)
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(data["keystore.p12"], b"wrong")
    key, cert, chain = pkcs12.load_key_and_certificates(data["keystore.p12"], password)
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    assert (
        key is not None
        and cert is not None
        and [c.fingerprint(c.signature_hash_algorithm) for c in chain] == [ca.fingerprint(ca.signature_hash_algorithm)]
    )
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert sans == [
        "plant-hivemq",
        "plant-hivemq.factory",
        "plant-hivemq.factory.svc",
        "plant-hivemq.factory.svc.cluster.local",
    ]
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # Fresh material every time: nothing derived from the names alone.
    again = mqtt_tls.new_secret("plant", "factory")["data"]
    assert all(again[k] != secret["data"][k] for k in secret["data"])


def test_children_that_would_read_a_secret_are_known():
    name, spec, kids = _render()
    readers = {m["metadata"]["name"] for m in kids if children.references_secret(m, f"{name}-mqtt-tls")}
    assert readers == {f"{name}-hivemq", f"{name}-simulator", f"{name}-bridge"}


def test_a_secret_the_operator_did_not_record_is_a_name_conflict_once_reconciled():
    r = _resource()
    r["metadata"].update(namespace=NS, generation=3)
    assert handlers.secret_conflicts(r) == []  # never reconciled: the Secret may simply not be made yet
    r["status"] = {"observedGeneration": 3}
    # Both of the operator's MQTT Secrets (TLS and credentials are on by default).
    made = [f"{r['metadata']['name']}-mqtt-tls", f"{r['metadata']['name']}-mqtt-credentials"]
    assert handlers.secret_conflicts(r) == [f"Secret/{n}" for n in made]
    r["status"]["createdSecrets"] = made[:1]
    assert handlers.secret_conflicts(r) == [f"Secret/{made[1]}"]
    r["status"]["createdSecrets"] = made
    assert handlers.secret_conflicts(r) == []
    off = copy.deepcopy(r)
    off["status"] = {"observedGeneration": 3}
    _tls_off(off["spec"])
    assert handlers.secret_conflicts(off) == [f"Secret/{made[1]}"]  # TLS off: only the credentials are wanted


def test_the_crd_documents_the_secret_keys_and_the_port_default():
    props = validate.openapi_schema()["properties"]["spec"]["properties"]["mqtt"]["properties"]
    assert "default" not in props["port"] and "8883" in props["port"]["description"]
    tls = props["tls"]["properties"]
    assert tls["enabled"]["default"] is True
    for key in ("keystore.p12", "ca.crt", "keystore-password"):
        assert key in tls["secretRef"]["description"], key
    assert hivemq.MQTT_PORT_NAME == "mqtt"


#: Specs the API server refuses, with the start of its message (also sent to the real one: test_real_mqtt_tls.py).
INVALID_TLS = [
    (
        {"mqtt": {"tls": {"enabled": False, "secretRef": {"name": "plant-mqtt-cert"}}}},
        "spec.mqtt.tls: Invalid value: mqtt.tls.secretRef needs mqtt.tls.enabled",
    ),
    (
        {"mqtt": {"mode": "external", "host": "mqtt.plant.example", "tls": {"secretRef": {"name": "plant-mqtt-cert"}}}},
        "spec.mqtt: Invalid value: mqtt.tls.secretRef is for mode managed",
    ),
    (
        {"mqtt": {"tls": {"secretRef": {"name": "Not_A_Name"}}}},
        "spec.mqtt.tls.secretRef.name: 'Not_A_Name' does not match",
    ),
    ({"mqtt": {"port": 0}}, "spec.mqtt.port: 0 is less than the minimum of 1"),
]


def invalid_resource(spec: dict) -> dict:
    r = _resource()
    for key, value in spec.items():
        r["spec"][key] = {**r["spec"].get(key, {}), **value}
    return r


@pytest.mark.parametrize("spec, message", INVALID_TLS, ids=range(len(INVALID_TLS)))
def test_tls_specs_that_cannot_work_are_refused(spec, message):
    errs = validate.errors(invalid_resource(spec))
    assert any(e.startswith(message) for e in errs), errs


def test_a_secret_of_ones_own_with_tls_on_is_accepted():
    r = invalid_resource({"mqtt": {"tls": {"secretRef": {"name": "plant-mqtt-cert"}}}})
    assert validate.errors(r) == []
