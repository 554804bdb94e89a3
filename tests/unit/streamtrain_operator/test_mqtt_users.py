"""The managed broker authenticates by default (spec.mqtt.authentication unset = credentials): without a users
Secret of the user's, the operator's one Secret <name>-mqtt-credentials (streamtrain.operator.mqtt_users) holds
the broker's users file, the bridge's identity and the simulated fleet's passwords, and each Pod reads only its
key. Rendering stays a pure function of the spec: no password or hash is ever in a manifest."""

from __future__ import annotations

import copy
import json
import re

from streamtrain import credentials
from streamtrain.operator import children, handlers, mqtt_users, render, validate
from streamtrain.operator.render import connections
from streamtrain.simulator.fleet import Fleet, FleetConfig
from tests.k8s.conftest import EXAMPLES, ROOT, load_example

NS = "pipelines"


def _resource(example: str = "minimal", change=None) -> dict:
    r = copy.deepcopy(load_example(ROOT / f"examples/{example}.yaml"))
    if change:
        change(r["spec"])
    assert validate.errors(r) == [], validate.errors(r)
    return r


def _render(example: str = "minimal", change=None) -> tuple[str, dict, list[dict]]:
    r = _resource(example, change)
    spec = validate.defaulted(r)["spec"]
    return r["metadata"]["name"], spec, render.render(r["metadata"]["name"], NS, spec)


def _pods(kids: list[dict]) -> dict[str, dict]:
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"]["template"]["spec"]
        for m in kids
        if m["kind"] == "Deployment"
    }


def _refs(node, secret: str) -> set[str]:
    """The keys of Secret ``secret`` a manifest reads, by volume item or environment variable."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("secretKeyRef")
        if isinstance(ref, dict) and ref.get("name") == secret:
            found.add(ref["key"])
        vol = node.get("secret")
        if isinstance(vol, dict) and vol.get("secretName") == secret:
            assert "items" in vol, "a whole Secret mounted"
            found |= {i["key"] for i in vol["items"]}
        for v in node.values():
            found |= _refs(v, secret)
    elif isinstance(node, list):
        for v in node:
            found |= _refs(v, secret)
    return found


def _devices(tmp_path, text: str) -> dict[str, str]:
    """The device lines as the simulator reads them (streamtrain.credentials.read_device_passwords)."""
    path = tmp_path / "devices"
    path.write_text(text)
    return credentials.read_device_passwords(path)


def _env(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod["containers"][0].get("env", [])}


def test_a_managed_broker_authenticates_by_default_with_the_operators_secret():
    name, spec, kids = _render()
    assert "authentication" not in spec["mqtt"]  # unset: the default is decided per mode
    assert connections.mqtt_authentication(spec) == connections.CREDENTIALS
    assert connections.mqtt_users_operator_made(spec)
    secret = connections.mqtt_users_generated_name(name)
    assert secret == "demo-mqtt-credentials"
    pods = _pods(kids)
    # Each Pod only the keys it needs; nobody else reads the Secret.
    assert {c: _refs(p, secret) for c, p in pods.items() if _refs(p, secret)} == {
        "hivemq": {connections.USERS_KEY},
        "bridge": {connections.BRIDGE_USERNAME_KEY, connections.BRIDGE_PASSWORD_KEY},
        "simulator": {connections.DEVICES_KEY},
    }
    broker = pods["hivemq"]["containers"][0]
    assert broker["image"].endswith("-hivemq:" + spec["image"]["tag"])  # the launcher, not the allow-all image
    assert broker["args"] == [f"{connections.MQTT_USERS_MOUNT}/users"]
    bridge = _env(pods["bridge"])
    assert bridge["STREAMTRAIN_MQTT_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": secret,
        "key": connections.BRIDGE_USERNAME_KEY,
    }
    assert bridge["STREAMTRAIN_MQTT_PASSWORD_FILE"]["value"] == f"{connections.MQTT_PASSWORD_MOUNT}/password"
    assert "STREAMTRAIN_MQTT_PASSWORD" not in bridge  # the password only as a file
    sim = _env(pods["simulator"])
    assert sim["STREAMTRAIN_CREDENTIALS_FILE"]["value"] == f"{connections.MQTT_DEVICES_MOUNT}/credentials"
    assert "STREAMTRAIN_MQTT_USERNAME" not in sim and "STREAMTRAIN_MQTT_PASSWORD_FILE" not in sim
    # Rendered, never copied: no Secret among the children.
    assert "Secret" not in {m["kind"] for m in kids}


def test_no_password_or_hash_is_in_any_manifest(tmp_path):
    name, spec, kids = _render()
    material = mqtt_users.new_material(spec)
    text = json.dumps(kids)
    assert "pbkdf2_sha256" not in text
    assert not re.search(r"[A-Za-z0-9_.-]+-\d{5}:", text), "a device_id:password line"
    for device_id, password in _devices(tmp_path, material[connections.DEVICES_KEY]).items():
        assert password not in text, device_id
    assert material[connections.BRIDGE_PASSWORD_KEY] not in text


def test_the_material_is_the_bridge_and_the_simulators_devices_hashed_once(tmp_path):
    _, spec, _ = _render(change=lambda s: s.setdefault("fleet", {}).update(devices=7))
    material = mqtt_users.new_material(spec)
    assert set(material) == {
        connections.USERS_KEY,
        connections.BRIDGE_USERNAME_KEY,
        connections.BRIDGE_PASSWORD_KEY,
        connections.DEVICES_KEY,
    }
    users = {
        u: (role, h) for u, role, h in (line.split(":", 2) for line in material[connections.USERS_KEY].splitlines())
    }
    devices = _devices(tmp_path, material[connections.DEVICES_KEY])
    # The simulator's own ids (simulator/fleet.py), so every device it runs has an identity.
    assert list(devices) == Fleet(FleetConfig(devices=7)).device_ids == credentials.fleet_ids(7)
    bridge = material[connections.BRIDGE_USERNAME_KEY]
    assert set(users) == {bridge, *devices}
    assert users[bridge][0] == "bridge" and all(users[d][0] == "device" for d in devices)
    assert credentials.verify_password(material[connections.BRIDGE_PASSWORD_KEY], users[bridge][1])
    for d, p in devices.items():
        assert credentials.verify_password(p, users[d][1]), d
    assert len(set(devices.values()) | {material[connections.BRIDGE_PASSWORD_KEY]}) == 8  # all random, distinct
    # Another call: other passwords (the Secret is made once; see test_real_mqtt_users.py for "never replaced").
    assert mqtt_users.new_material(spec)[connections.BRIDGE_PASSWORD_KEY] != material[connections.BRIDGE_PASSWORD_KEY]


def test_real_devices_only_get_no_simulated_identities():
    name, spec, kids = _render(change=lambda s: s.setdefault("fleet", {}).update(simulated=False))
    material = mqtt_users.new_material(spec)
    assert connections.DEVICES_KEY not in material
    assert [line.split(":")[0] for line in material[connections.USERS_KEY].splitlines()] == [mqtt_users.BRIDGE_USER]
    assert "simulator" not in _pods(kids)


def test_the_secret_manifest_is_owned_by_the_broker_component_and_holds_string_data():
    _, spec, _ = _render()
    s = mqtt_users.new_secret("demo", NS, spec)
    assert s["metadata"]["name"] == "demo-mqtt-credentials" and s["metadata"]["namespace"] == NS
    assert s["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert set(s["stringData"]) == set(mqtt_users.new_material(spec))


def test_a_users_secret_of_ones_own_changes_nothing():
    name, spec, kids = _render("secure")
    assert not connections.mqtt_users_operator_made(spec)
    assert not any(_refs(m, connections.mqtt_users_generated_name(name)) for m in kids)
    pods = _pods(kids)
    assert _refs(pods["hivemq"], "secure-mqtt-users") == {"users"}
    assert _refs(pods["bridge"], "secure-mqtt-bridge") == {"username", "password"}
    assert _refs(pods["simulator"], "secure-devices") == {"credentials"}


def test_authentication_none_is_explicit_and_open():
    name, spec, kids = _render(change=lambda s: s.setdefault("mqtt", {}).update(authentication="none"))
    assert not connections.mqtt_credentials(spec) and not connections.mqtt_users_operator_made(spec)
    assert not any(_refs(m, connections.mqtt_users_generated_name(name)) for m in kids)
    assert _pods(kids)["hivemq"]["containers"][0]["image"].startswith("hivemq/hivemq-ce:")
    description = validate.openapi_schema()["properties"]["spec"]["properties"]["mqtt"]["properties"]["authentication"][
        "description"
    ]
    assert "none: anyone who reaches the Service" in description
    assert "never replaced" in description and "delete it" in description


def test_an_external_broker_is_not_authenticated_by_the_operator():
    _, spec, kids = _render("external")
    assert connections.mqtt_authentication(spec) == "none" and not connections.mqtt_users_operator_made(spec)


def test_the_ingestion_extension_authenticates_with_the_operators_users():
    name, spec, kids = _render("ingest-extension")
    pods = _pods(kids)
    assert "bridge" not in pods
    assert _refs(pods["hivemq"], connections.mqtt_users_generated_name(name)) == {connections.USERS_KEY}
    env = _env(pods["hivemq"])
    assert "STREAMTRAIN_INGEST_KAFKA_BOOTSTRAP" in env


def test_the_crd_refuses_a_bridge_identity_without_its_users_file():
    r = _resource()
    r["spec"]["mqtt"] = {"username": {"secretKeyRef": {"name": "b", "key": "u"}}}
    assert any("name the bridge in your own mqtt.usersSecretRef" in e for e in validate.errors(r))
    r["spec"]["mqtt"]["authentication"] = "none"  # the stock broker ignores it; the bridge sends it
    assert validate.errors(r) == []


def test_other_presets_need_authentication_none_named():
    r = _resource()
    r["spec"]["ingest"] = {"preset": "sparkplug-b"}
    assert any(e.startswith("spec.ingest.preset: ") for e in validate.errors(r))
    r["spec"].setdefault("mqtt", {})["authentication"] = "none"
    assert validate.errors(r) == []


def test_both_operator_secrets_are_wanted_and_a_grown_fleet_keeps_the_name():
    r = _resource()
    r["metadata"].update(namespace=NS, generation=1)
    r["status"] = {"observedGeneration": 1, "createdSecrets": ["demo-mqtt-tls"]}
    assert handlers.secret_conflicts(r) == ["Secret/demo-mqtt-credentials"]
    grown = copy.deepcopy(r)
    grown["spec"].setdefault("fleet", {})["devices"] = 5000
    # Same Secret, never replaced (the CRD says so): nothing in the spec names a second one.
    spec = children.defaulted_spec(grown)
    assert connections.mqtt_devices_ref("demo", spec) == {
        "name": "demo-mqtt-credentials",
        "key": connections.DEVICES_KEY,
    }


def test_every_example_is_sensible_with_the_default():
    for path in EXAMPLES:
        r = load_example(path)
        spec = validate.defaulted(r)["spec"]
        if spec["mqtt"]["mode"] == "managed":
            assert connections.mqtt_credentials(spec), path.stem  # no example leaves the broker open
