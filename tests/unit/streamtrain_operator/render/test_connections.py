"""spec.mqtt.authentication: credentials, rendered and checked offline: HiveMQ runs our launcher image
with the users file (a Secret key, read-only) as its last argument; the bridge and the simulator each
reference exactly their own Secret and get the *_FILE settings their programs read; no secret value
appears anywhere; the CRD refuses credentials without the Secret references. The launcher image
(images/hivemq.Dockerfile) is checked structurally against the Pod the operator renders."""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from streamtrain import __version__
from streamtrain.operator import render, validate
from streamtrain.operator.render import hivemq, objects
from tests.k8s.conftest import ROOT, assert_pinned_multi_stage_non_root, load_example

SECURE = load_example(ROOT / "examples/secure.yaml")
DOCKERFILE = (ROOT / "images/hivemq.Dockerfile").read_text()
LAUNCHER = (ROOT / "stack/java/HiveMQLauncher.java").read_text()


def _children(resource: dict) -> list[dict]:
    return render.render(resource["metadata"]["name"], "pipelines", validate.defaulted(resource)["spec"])


def _secure(change=None) -> list[dict]:
    r = copy.deepcopy(SECURE)
    if change:
        change(r["spec"])
    assert validate.errors(r) == []
    return _children(r)


def _deployment(children: list[dict], component: str) -> dict:
    return next(m for m in children if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-" + component))


def _pod(children: list[dict], component: str) -> dict:
    return _deployment(children, component)["spec"]["template"]["spec"]


def _tls_refs(name: str, *keys: str) -> set[tuple[str, str]]:
    """The (Secret, key) pairs of the operator's MQTT TLS Secret (on by default) a Pod references."""
    return {(f"{name}-mqtt-tls", k) for k in keys}


def _secret_refs(node) -> set[tuple[str, str]]:
    """Every (Secret name, key) a manifest references, by volume or by environment."""
    found: set[tuple[str, str]] = set()
    if isinstance(node, dict):
        if "secretKeyRef" in node:
            found.add((node["secretKeyRef"]["name"], node["secretKeyRef"]["key"]))
        if "secret" in node and isinstance(node["secret"], dict) and "secretName" in node["secret"]:
            found |= {(node["secret"]["secretName"], i["key"]) for i in node["secret"].get("items", [])}
        for v in node.values():
            found |= _secret_refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _secret_refs(v)
    return found


def _env(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod["containers"][0]["env"]}


def _mount_of(pod: dict, volume: str) -> dict:
    return next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume)


def _volume(pod: dict, name: str) -> dict:
    return next(v for v in pod["volumes"] if v["name"] == name)


def _hardened(pod: dict) -> None:
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0 and sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True


# --- HiveMQ ------------------------------------------------------------------------------------------


def test_hivemq_runs_the_launcher_image_with_the_users_file_mounted_read_only():
    pod = _pod(_secure(), "hivemq")
    c = pod["containers"][0]
    assert c["image"] == f"ghcr.io/streamtrain/streamtrain-hivemq:{__version__}"  # <image.repository>-hivemq:<tag>
    users = _volume(pod, "mqtt-users")
    assert users["secret"]["secretName"] == "secure-mqtt-users"
    assert users["secret"]["items"] == [{"key": "users", "path": "users"}]
    assert users["secret"]["defaultMode"] & 0o222 == 0, "nobody may write the users file"
    mount = _mount_of(pod, "mqtt-users")
    assert mount["readOnly"] is True
    # The launcher's last argument is the mounted file, and only that one (the folders are the entrypoint's).
    assert c["args"] == [f"{mount['mountPath']}/users"]
    # Besides the users file only the broker's TLS keystore and its password (test_mqtt_tls_render.py).
    assert _secret_refs(pod) == {
        ("secure-mqtt-users", "users"),
        *_tls_refs("secure", "keystore.p12", "keystore-password"),
    }
    _hardened(pod)
    assert c["securityContext"]["runAsUser"] == objects.UID


def test_hivemq_launcher_image_can_be_named():
    pod = _pod(_secure(lambda s: s["mqtt"].update(launcherImage="reg.example/hivemq-auth:7")), "hivemq")
    assert pod["containers"][0]["image"] == "reg.example/hivemq-auth:7"


def test_every_path_hivemq_writes_is_a_volume():
    pod = _pod(_secure(), "hivemq")
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    for key, path in hivemq.WRITES.items():
        # Scratch space by default; the data folder is the broker's claim when spec.mqtt.storage has a
        # size (tests/unit/streamtrain_operator/render/test_hivemq.py).
        assert path in mounts and "emptyDir" in _volume(pod, mounts[path]), path


def test_without_authentication_nothing_changes():
    minimal = load_example(ROOT / "examples/minimal.yaml")
    minimal["spec"].setdefault("mqtt", {})["authentication"] = "none"  # named: the default is credentials
    children = _children(minimal)
    pod = _pod(children, "hivemq")
    assert pod["containers"][0]["image"] == "hivemq/hivemq-ce:2025.5" and "args" not in pod["containers"][0]
    assert _secret_refs(pod) == _tls_refs("demo", "keystore.p12", "keystore-password")
    assert "STREAMTRAIN_CREDENTIALS_FILE" not in _env(_pod(children, "simulator"))
    # An external broker: the bridge's own user and password, as before.
    external = _children(load_example(ROOT / "examples/external.yaml"))
    bridge = _env(_pod(external, "bridge"))
    assert bridge["STREAMTRAIN_MQTT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "field-mqtt", "key": "password"}
    assert "STREAMTRAIN_MQTT_PASSWORD_FILE" not in bridge


# --- the bridge and the simulator ---------------------------------------------------------------------


def test_bridge_references_only_its_own_secret_and_reads_the_password_from_a_file(monkeypatch, tmp_path):
    pod = _pod(_secure(), "bridge")
    env = _env(pod)
    assert env["STREAMTRAIN_MQTT_USERNAME"]["valueFrom"]["secretKeyRef"] == {
        "name": "secure-mqtt-bridge",
        "key": "username",
    }
    assert "STREAMTRAIN_MQTT_PASSWORD" not in env
    volume = _volume(pod, "mqtt-password")
    assert volume["secret"]["secretName"] == "secure-mqtt-bridge"
    assert volume["secret"]["items"] == [{"key": "password", "path": "password"}]
    mount = _mount_of(pod, "mqtt-password")
    assert mount["readOnly"] is True
    assert env["STREAMTRAIN_MQTT_PASSWORD_FILE"]["value"] == f"{mount['mountPath']}/password"
    mqtt_refs = {
        ref for ref in _secret_refs(pod) if not ref[0].endswith("-kafka") and ref[0] != "secure-cluster-ca-cert"
    }
    assert mqtt_refs == {
        ("secure-mqtt-bridge", "username"),
        ("secure-mqtt-bridge", "password"),
        *_tls_refs("secure", "ca.crt"),
    }
    _hardened(pod)
    # The bridge program reads exactly this: its settings take the file and return its content.
    from streamtrain.bridge.app import BridgeSettings

    (tmp_path / "password").write_text("from-the-secret\n")
    monkeypatch.setenv("STREAMTRAIN_MQTT_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("STREAMTRAIN_MQTT_USERNAME", "bridge")
    assert BridgeSettings().password() == "from-the-secret"


def test_simulator_gets_its_devices_file_and_never_the_bridge_identity(monkeypatch, tmp_path):
    pod = _pod(_secure(), "simulator")
    env = _env(pod)
    assert not {"STREAMTRAIN_MQTT_USERNAME", "STREAMTRAIN_MQTT_PASSWORD", "STREAMTRAIN_MQTT_PASSWORD_FILE"} & set(env)
    volume = _volume(pod, "mqtt-devices")
    assert volume["secret"]["secretName"] == "secure-devices"
    assert volume["secret"]["items"] == [{"key": "credentials", "path": "credentials"}]
    mount = _mount_of(pod, "mqtt-devices")
    assert mount["readOnly"] is True
    assert env["STREAMTRAIN_CREDENTIALS_FILE"]["value"] == f"{mount['mountPath']}/credentials"
    # The simulator speaks MQTT only: its devices' file, and the CA of the broker's certificate.
    assert _secret_refs(pod) == {("secure-devices", "credentials"), *_tls_refs("secure", "ca.crt")}
    _hardened(pod)
    from streamtrain.simulator.settings import SimulatorSettings

    monkeypatch.setenv("STREAMTRAIN_CREDENTIALS_FILE", env["STREAMTRAIN_CREDENTIALS_FILE"]["value"])
    assert str(SimulatorSettings().credentials_file) == env["STREAMTRAIN_CREDENTIALS_FILE"]["value"]


def test_no_other_workload_sees_an_mqtt_secret():
    mqtt_secrets = {"secure-mqtt-users", "secure-mqtt-bridge", "secure-devices"}
    owners = {}
    for m in _secure():
        for name, _ in _secret_refs(m):
            if name in mqtt_secrets:
                owners.setdefault(name, set()).add(m["metadata"]["name"])
    assert owners == {
        "secure-mqtt-users": {"secure-hivemq"},
        "secure-mqtt-bridge": {"secure-bridge"},
        "secure-devices": {"secure-simulator"},
    }


def test_no_secret_value_in_any_manifest():
    """The operator only ever names Secrets: no env var carries a password or credentials file inline,
    and no users-file or device-password line appears in the rendered text."""
    children = _secure()
    for m in children:
        for c in m.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in c.get("env", []):
                if re.search(r"PASSWORD|CREDENTIALS|SECRET|JAAS", e["name"]) and "value" in e:
                    assert e["name"].endswith("_FILE") and e["value"].startswith("/var/run/streamtrain/"), e
    text = json.dumps(children)
    assert "pbkdf2_sha256" not in text
    assert not re.search(r'"[A-Za-z0-9_.-]+-\d{5}:', text), "a device_id:password line"
    assert not any(m["kind"] == "Secret" for m in children), "the operator makes no Secrets of its own"


# --- the CRD -----------------------------------------------------------------------------------------


def _without(path: str) -> dict:
    r = copy.deepcopy(SECURE)
    *parents, leaf = path.split(".")
    node = r["spec"]
    for p in parents:
        node = node[p]
    del node[leaf]
    return r


def _auth_none() -> dict:
    r = copy.deepcopy(SECURE)
    r["spec"]["mqtt"]["authentication"] = "none"
    return r


REFUSED = [
    (
        # The bridge's identity belongs with the users file that knows it: the operator's Secret holds its own.
        _without("mqtt.usersSecretRef"),
        "spec.mqtt: Invalid value: mqtt.username and mqtt.password name the bridge in your own mqtt.usersSecretRef",
    ),
    (_without("mqtt.username"), "spec.mqtt: Invalid value: mqtt.username and mqtt.password (the bridge's identity)"),
    (_without("mqtt.password"), "spec.mqtt: Invalid value: mqtt.username and mqtt.password (the bridge's identity)"),
    (
        _without("fleet.credentialsSecretRef"),
        "spec: Invalid value: fleet.credentialsSecretRef is required for a simulated fleet with your own mqtt.usersSecretRef",
    ),
    (
        _auth_none(),
        "spec.mqtt: Invalid value: mqtt.usersSecretRef needs a managed broker with mqtt.authentication credentials",
    ),
]


@pytest.mark.parametrize("resource,message", REFUSED, ids=["users", "username", "password", "fleet", "auth-none"])
def test_crd_refuses_credentials_without_the_secret_refs(resource, message):
    errs = validate.errors(resource)
    assert any(e.startswith(message) for e in errs), errs


def test_crd_refuses_inline_secrets_and_misplaced_refs():
    r = copy.deepcopy(SECURE)
    r["spec"]["mqtt"]["usersSecretRef"] = "bridge:bridge:pbkdf2_sha256$1$a$b"
    assert any(e.startswith("spec.mqtt.usersSecretRef: ") for e in validate.errors(r))
    r = copy.deepcopy(SECURE)
    r["spec"]["fleet"]["credentialsSecretRef"] = {"name": "secure-devices"}
    assert any("'key' is a required property" in e for e in validate.errors(r))
    r = copy.deepcopy(load_example(ROOT / "examples/minimal.yaml"))
    r["spec"] = {"fleet": {"credentialsSecretRef": {"name": "d", "key": "k"}}}
    assert validate.errors(r) == [
        "spec: Invalid value: fleet.credentialsSecretRef goes with your own mqtt.usersSecretRef (the operator's "
        "<name>-mqtt-credentials holds the simulated fleet's passwords otherwise)"
    ]
    r = copy.deepcopy(SECURE)
    r["spec"]["mqtt"].update(mode="external", host="mqtt.example.com")
    assert (
        "spec.mqtt: Invalid value: mqtt.authentication credentials is for mode managed (an external broker "
        "checks its own users)" in validate.errors(r)
    )


def test_real_devices_need_no_fleet_credentials():
    r = _without("fleet.credentialsSecretRef")
    r["spec"]["fleet"]["simulated"] = False
    assert validate.errors(r) == []
    names = {m["metadata"]["name"] for m in _children(r)}
    assert "secure-simulator" not in names and "secure-hivemq" in names


# --- the launcher image ------------------------------------------------------------------------------


def _entrypoint() -> list[str]:
    m = re.search(r"^ENTRYPOINT (\[.*?\])$", DOCKERFILE.replace("\\\n", ""), re.M | re.S)
    return json.loads(m.group(1))


def test_launcher_image_is_pinned_multi_stage_and_non_root():
    assert_pinned_multi_stage_non_root(DOCKERFILE)
    assert "temurin-17" in DOCKERFILE and re.search(r"^ARG JRE_IMAGE=eclipse-temurin:17\.", DOCKERFILE, re.M)


def test_launcher_image_resolves_the_jars_like_the_local_stack():
    build = DOCKERFILE.split("AS runtime", 1)[0]
    assert "COPY stack/java/hivemq-pom.xml" in build
    assert "maven-dependency-plugin:3.8.1:copy-dependencies" in build
    assert "maven-dependency-plugin:3.8.1:copy-dependencies" in (ROOT / "stack/jars.py").read_text()
    pom = (ROOT / "stack/java/hivemq-pom.xml").read_text()
    version = re.search(r"<hivemq.version>([^<]+)</hivemq.version>", pom).group(1)
    assert re.search(rf"^ARG HIVEMQ_VERSION={re.escape(version)}$", build, re.M)


def test_entrypoint_and_pod_args_are_the_launchers_arguments():
    ep = _entrypoint()
    assert ep[0] == "java" and "-Djava.io.tmpdir=/tmp" in ep
    # Compiled in the build stage (a JRE has no jdk.compiler to run it as a source file), run from its classes.
    assert ep[ep.index("-cp") + 1] == "/opt/streamtrain/classes:/opt/hivemq/lib/*"
    build, runtime = DOCKERFILE.split("AS runtime", 1)
    assert "COPY stack/java/HiveMQLauncher.java ./HiveMQLauncher.java" in build
    assert "javac --release 17 -cp '/opt/hivemq/lib/*' -d /opt/streamtrain/classes HiveMQLauncher.java" in build
    assert "COPY --from=build /opt/streamtrain/classes /opt/streamtrain/classes" in runtime
    assert "HiveMQLauncher.java" not in runtime
    i = ep.index("HiveMQLauncher")
    conf, data, ext = ep[i + 1 :]
    assert f"COPY images/hivemq-config.xml {conf}/config.xml" in DOCKERFILE
    assert data == hivemq.WRITES["data"]
    assert f"HIVEMQ_LOG_FOLDER={hivemq.WRITES['log']}" in DOCKERFILE
    assert ext not in hivemq.WRITES.values()  # read-only and empty: the launcher embeds its extension
    # conf, data, ext from the image plus the users file from the Pod: the launcher's 4-argument form.
    assert "args.length != 3 && args.length != 4" in LAUNCHER
    pod_args = _pod(_secure(), "hivemq")["containers"][0]["args"]
    assert len(ep[i + 1 :] + pod_args) == 4


def test_shipped_config_is_the_local_stacks_listening_on_every_interface():
    from streamtrain.stack.local import hivemq_config_xml

    shipped = (ROOT / "images/hivemq-config.xml").read_text()
    assert shipped == hivemq_config_xml(1883, "0.0.0.0")
    pod = _pod(_secure(lambda s: s["mqtt"].update(tls={"enabled": False})), "hivemq")
    assert pod["containers"][0]["ports"][0]["containerPort"] == 1883
    assert "<bind-address>0.0.0.0</bind-address>" in shipped and "127.0.0.1" not in shipped


def test_skaffold_builds_the_launcher_image_where_the_operator_looks():
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    artifacts = {a["image"]: a for a in config["build"]["artifacts"]}
    main = config["build"]["artifacts"][0]["image"]
    launcher = artifacts[f"{main}-hivemq"]
    assert launcher["docker"]["dockerfile"] == "images/hivemq.Dockerfile"
    assert (ROOT / launcher["context"] / launcher["docker"]["dockerfile"]).is_file()
    spec = {"image": {"repository": main, "tag": "dev"}, "mqtt": {}}
    assert hivemq.hivemq_launcher_image(spec) == f"{main}-hivemq:dev"
