"""Kafka authentication and authorization on Kubernetes, checked on the rendered children (no cluster):
one KafkaUser per program with exactly the topics it uses, each Pod wired to its own user Secret and the
cluster CA only, no credential value anywhere, nothing of it with ``authentication: none``, and the
third-party Pods (HiveMQ, ksqlDB) with a read-only root."""

from __future__ import annotations

import copy
import importlib
import json

import jsonschema
import pytest

from streamtrain.kafka import READER_GROUP, KafkaSecurity
from streamtrain.operator import crd, render, validate
from streamtrain.operator.render import connections, strimzi
from streamtrain.operator.render import mqtt_tls as render_mqtt_tls
from streamtrain.operator.render import signing as render_signing
from tests.k8s.conftest import EXAMPLES, ROOT, load_example

STRIMZI = ROOT / "tests/k8s/schemas/strimzi-1.2.0"
SECURITY = {f: KafkaSecurity.model_config["env_prefix"] + f.upper() for f in KafkaSecurity.model_fields}
EXTERNAL_SCRAM = {
    "mode": "external",
    "bootstrap": "kafka-0.example.com:9094",
    "authentication": "scram-sha-512",
    "username": "plant-streamtrain",
    "passwordSecretRef": {"name": "plant-kafka", "key": "pw"},
    "caSecretRef": {"name": "plant-kafka-ca", "key": "ca.pem"},
}


def resource(example: str = "minimal", change=None) -> dict:
    r = load_example(ROOT / f"examples/{example}.yaml")
    if change:
        change(r["spec"])
    return r


def rendered(example: str = "minimal", change=None) -> list[dict]:
    r = resource(example, change)
    assert validate.errors(r) == [], validate.errors(r)
    return render.render(r["metadata"]["name"], "ns", validate.defaulted(r)["spec"])


def kafka(**fields):
    return lambda s: s.setdefault("kafka", {}).update(fields)


#: Rendered pipelines worth checking: defaults, every field, each engine, and an external SCRAM cluster.
VARIANTS = {
    "minimal": ("minimal", None),
    "full": ("full", None),
    "streams-scorer": ("minimal", lambda s: s.setdefault("scorer", {}).update(engine="kafka-streams")),
    "ksqldb-no-windows": (
        "minimal",
        lambda s: s.update(preprocessing={"engine": "ksqldb", "features": ["temperature"]}),
    ),
    "external-scram": ("external", lambda s: s.update(kafka=dict(EXTERNAL_SCRAM))),
}


def pods(children: list[dict]) -> dict[str, dict]:
    """Pod template of every workload by component."""
    out = {}
    for m in children:
        if m["kind"] in ("Deployment", "Job"):
            out[m["metadata"]["labels"]["app.kubernetes.io/component"]] = m["spec"]["template"]
    return out


def users(children: list[dict]) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in children if m["kind"] == "KafkaUser"}


def env_of(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in pod["spec"]["containers"][0].get("env", [])}


def secrets_referenced(pod: dict) -> set[str]:
    names = {v["secret"]["secretName"] for v in pod["spec"].get("volumes", []) if "secret" in v}
    names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in env_of(pod).values() if "valueFrom" in e}
    return names


def mounted_secret(pod: dict, path: str) -> tuple[str, str]:
    """(Secret name, key) behind a file path inside the container."""
    c = pod["spec"]["containers"][0]
    for m in c["volumeMounts"]:
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            vol = next(v for v in pod["spec"]["volumes"] if v["name"] == m["name"])
            assert m.get("readOnly") is True, f"{path} is on a writable mount"
            item = next(i for i in vol["secret"]["items"] if i["path"] == path[len(m["mountPath"]) + 1 :])
            return vol["secret"]["secretName"], item["key"]
    raise AssertionError(f"nothing mounted at {path}")


# --- Strimzi schema ------------------------------------------------------------------------------------


def _validator(kind: str) -> jsonschema.Draft7Validator:
    data = json.loads((STRIMZI / f"{kind.lower()}.json").read_text())
    return jsonschema.Draft7Validator(validate.to_jsonschema(data["openAPIV3Schema"]))


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "external-scram"])
def test_kafka_users_and_secured_kafka_validate_against_strimzi(variant):
    children = rendered(*VARIANTS[variant])
    checked = 0
    for m in children:
        if m["kind"] in ("KafkaUser", "Kafka"):
            assert m["apiVersion"] == strimzi.STRIMZI_API
            errors = [
                f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(m["kind"]).iter_errors(m)
            ]
            assert errors == [], (m["metadata"]["name"], errors)
            checked += 1
    assert checked == 5  # the Kafka and four users: bridge, preprocessing, trainer, scorer


def test_strimzi_schema_catches_a_bad_acl():
    user = copy.deepcopy(next(iter(users(rendered()).values())))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Produce"]
    assert list(_validator("KafkaUser").iter_errors(user))


def test_managed_cluster_is_secure_by_default():
    children = rendered()
    k = next(m for m in children if m["kind"] == "Kafka")["spec"]
    assert k["kafka"]["listeners"] == [
        {"name": "tls", "port": 9093, "type": "internal", "tls": True, "authentication": {"type": "scram-sha-512"}}
    ]
    assert k["kafka"]["authorization"] == {"type": "simple"}
    assert "userOperator" in k["entityOperator"]
    assert set(users(children)) == {
        "demo-bridge-kafka",
        "demo-preprocess-kafka",
        "demo-train-kafka",
        "demo-scorer-kafka",
    }
    for u in users(children).values():
        assert u["metadata"]["labels"]["strimzi.io/cluster"] == "demo"
        assert u["spec"]["authentication"] == {"type": "scram-sha-512"}
        assert u["spec"]["authorization"]["type"] == "simple" and u["spec"]["authorization"]["acls"]


# --- each Pod: its own user, the CA, nothing else ----------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_pod_uses_exactly_its_own_user_secret_and_the_ca(variant):
    children = rendered(*VARIANTS[variant])
    name = children[0]["metadata"]["labels"]["app.kubernetes.io/instance"]
    spec = validate.defaulted(resource(*VARIANTS[variant]))["spec"]
    mqtt = {spec["mqtt"][f]["secretKeyRef"]["name"] for f in ("username", "password") if f in spec["mqtt"]}
    if connections.mqtt_users_operator_made(spec):  # the operator's MQTT identities (test_mqtt_users_render.py)
        mqtt.add(connections.mqtt_users_generated_name(name))
    external = spec["kafka"]["mode"] == "external"
    ca = "plant-kafka-ca" if external else f"{name}-cluster-ca-cert"
    talkers = {c for c, _, _ in connections.kafka_principals(name, spec)}
    found = users(children)
    model_signing = render_signing.secret_name(name, spec)
    mqtt_tls_secret = render_mqtt_tls.secret_name(name, spec)
    for component, pod in pods(children).items():
        refs = secrets_referenced(pod) - mqtt
        if component in ("train", "scorer"):  # the model-signing key pair (test_model_signing.py), no Kafka credential
            assert model_signing in refs, component
            refs -= {model_signing}
        if (
            component in ("simulator", "bridge", "hivemq") and mqtt_tls_secret
        ):  # MQTT's CA or keystore, no Kafka credential
            assert mqtt_tls_secret in refs, component
            refs -= {mqtt_tls_secret}
        env = env_of(pod)
        if component not in talkers:  # simulator, HiveMQ: no Kafka credentials at all
            assert refs == set() and not set(SECURITY.values()) & set(env), component
            continue
        own = "plant-kafka" if external else f"{name}-{component}-kafka"
        assert refs == {own, ca}, (component, refs)
        if not external:
            assert own in found, f"{component} uses a KafkaUser that is not rendered"
        if component == "ksqldb":
            assert env["KSQL_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
            assert env["KSQL_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
            assert env["KSQL_SSL_TRUSTSTORE_TYPE"]["value"] == "PEM"
            assert mounted_secret(pod, env["KSQL_SSL_TRUSTSTORE_LOCATION"]["value"]) == (
                ca,
                "ca.pem" if external else "ca.crt",
            )
            jaas = env["KSQL_SASL_JAAS_CONFIG"]
            if external:  # assembled by the kubelet from the password Secret: only a reference here
                assert "$(KAFKA_SASL_PASSWORD)" in jaas["value"] and 'username="plant-streamtrain"' in jaas["value"]
                assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": own, "key": "pw"}
            else:
                assert jaas["valueFrom"]["secretKeyRef"] == {"name": own, "key": "sasl.jaas.config"}
            continue
        assert env[SECURITY["security_protocol"]]["value"] == "SASL_SSL"
        assert env[SECURITY["username"]]["value"] == ("plant-streamtrain" if external else own)
        assert mounted_secret(pod, env[SECURITY["password_file"]]["value"]) == (own, "pw" if external else "password")
        assert mounted_secret(pod, env[SECURITY["ca_file"]]["value"]) == (ca, "ca.pem" if external else "ca.crt")
        assert env["STREAMTRAIN_KAFKA_BOOTSTRAP"]["value"] == (
            "kafka-0.example.com:9094" if external else f"{name}-kafka-bootstrap:9093"
        )


def test_external_scram_creates_no_users():
    children = rendered(*VARIANTS["external-scram"])
    assert not users(children) and not any(m["kind"] == "Kafka" for m in children)


# --- no credential values ----------------------------------------------------------------------------


def _walk(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}.{k}", k, v
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


CREDENTIAL = ("PASSWORD", "JAAS", "SECRET", "TOKEN")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_credential_value_in_rendered_manifests(variant):
    children = rendered(*VARIANTS[variant])
    assert not any(m["kind"] == "Secret" for m in children)  # credentials are Strimzi's or the user's, never ours
    for m in children:
        for path, key, value in _walk(m):
            if key == "env":
                for e in value:
                    sensitive = any(w in e["name"].upper() for w in CREDENTIAL) and not e["name"].endswith("_FILE")
                    if sensitive and "value" in e:  # only the external ksqlDB JAAS line, with a reference in it
                        assert (
                            e["name"] == "KSQL_SASL_JAAS_CONFIG" and 'password="$(KAFKA_SASL_PASSWORD)"' in e["value"]
                        ), e
            if "password" in key.lower() and key != "passwordSecretRef":
                assert not isinstance(value, str), f"{m['metadata']['name']}{path}"
        text = json.dumps(m)
        assert "ScramLoginModule required" not in text or "$(KAFKA_SASL_PASSWORD)" in text


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_name_credentials_only_by_secret_reference(path):
    for where, key, value in _walk(load_example(path)):
        if any(w in key.upper() for w in ("PASSWORD", "CREDENTIAL", "TOKEN", "JAAS")):
            assert isinstance(value, dict) and ("secretKeyRef" in value or set(value) == {"name", "key"}), where


def test_crd_refuses_inline_kafka_credentials():
    assert any(
        "passwordSecretRef" in e
        for e in validate.errors(resource(change=kafka(**{**EXTERNAL_SCRAM, "passwordSecretRef": "hunter2"})))
    )
    assert any("password" in e for e in validate.errors(resource(change=kafka(**{**EXTERNAL_SCRAM, "password": "x"}))))


INVALID = [
    (
        {"mode": "external", "bootstrap": "k:9092", "authentication": "scram-sha-512"},
        "spec.kafka: Invalid value: kafka.username and kafka.passwordSecretRef are required",
    ),
    (
        {"username": "me", "authentication": "scram-sha-512"},
        "spec.kafka: Invalid value: kafka.username, passwordSecretRef and caSecretRef are for mode external",
    ),
    (
        {"mode": "external", "bootstrap": "k:9092", "username": "me", "passwordSecretRef": {"name": "s", "key": "k"}},
        "spec.kafka: Invalid value: kafka.username, passwordSecretRef and caSecretRef need kafka.authentication",
    ),
    ({"authentication": "plain"}, "spec.kafka.authentication: 'plain' is not one of"),
    ({**EXTERNAL_SCRAM, "caSecretRef": {"name": "ca"}}, "spec.kafka.caSecretRef: 'key' is a required property"),
]


@pytest.mark.parametrize("fields,message", INVALID, ids=range(len(INVALID)))
def test_invalid_authentication_rejected(fields, message):
    errs = validate.errors(resource(change=lambda s: s.update(kafka=fields)))
    assert any(e.startswith(message) for e in errs), errs


def test_authentication_field_in_the_crd():
    props = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["kafka"]
    assert props["properties"]["authentication"]["enum"] == ["scram-sha-512", "none"]
    assert set(props["properties"]["passwordSecretRef"]["required"]) == {"name", "key"}


# --- ACLs: exactly the topics each program uses -------------------------------------------------------

SETTINGS = {
    "bridge": "streamtrain.bridge.app:BridgeSettings",
    "preprocess": "streamtrain.preprocessor.app:PreprocessSettings",
    "train": "streamtrain.trainer.train:TrainSettings",
    "scorer": "streamtrain.scorer.app:ScoreSettings",
}


def uses(component: str, s, windows: bool) -> tuple[set[str], set[str]]:
    """(read, write) topics of each component, written out independently of streamtrain.access."""
    return {
        "bridge": (set(), {s.topic_raw, s.topic_deadletter}),
        "preprocess": (
            {s.topic_raw, s.topic_features},
            {s.topic_features, s.topic_windows, s.topic_sequences, s.topic_deadletter},
        ),
        "ksqldb": (
            {s.topic_raw} | ({s.topic_features} if windows else set()),
            {s.topic_features} | ({s.topic_windows} if windows else set()),
        ),
        "train": ({s.topic_features, s.topic_windows, s.topic_sequences, s.topic_models}, {s.topic_models}),
        "scorer": ({s.topic_features, s.topic_sequences, s.topic_models}, {s.topic_scores, s.topic_deadletter}),
    }[component]


def literal_topics(acls: list[dict], op: str) -> set[str]:
    return {
        a["resource"]["name"]
        for a in acls
        if a["resource"]["type"] == "topic" and a["resource"]["patternType"] == "literal" and op in a["operations"]
    }


@pytest.mark.parametrize("variant", ["minimal", "full", "streams-scorer", "ksqldb-no-windows"])
def test_acls_cover_exactly_the_topics_each_program_uses(variant, monkeypatch):
    children = rendered(*VARIANTS[variant])
    spec = validate.defaulted(resource(*VARIANTS[variant]))["spec"]
    name = children[0]["metadata"]["labels"]["app.kubernetes.io/instance"]
    windows = bool(spec["preprocessing"].get("windows"))
    found = users(children)
    workloads = pods(children)
    for component, program, group in connections.kafka_principals(name, spec):
        acls = found[f"{name}-{component}-kafka"]["spec"]["authorization"]["acls"]
        env = env_of(workloads[component])
        if component in SETTINGS:  # the program's own settings, read from its Pod's environment
            module, cls = SETTINGS[component].split(":")
            for e in env.values():
                # Not the files of mounted Secrets (absent here): Kafka's, MQTT's CA.
                mounted = {*SECURITY.values(), render_mqtt_tls.ca_file_variable()}
                if e["name"].startswith("STREAMTRAIN_") and "value" in e and e["name"] not in mounted:
                    monkeypatch.setenv(e["name"], e["value"])
            s = getattr(importlib.import_module(module), cls)()
        else:
            s = connections.settings_for(name, spec)
        read, write = uses(component, s, windows)
        assert literal_topics(acls, "Read") == read, component
        assert literal_topics(acls, "Write") == write, component
        assert s.topic_raw not in literal_topics(acls, "Write") or component == "bridge"
        assert not any(
            "All" in a["operations"] or a["resource"]["type"] == "cluster" for a in acls if component != "ksqldb"
        ), component
        groups = {a["resource"]["name"] for a in acls if a["resource"]["type"] == "group"}
        # Assign-only readers (trainer ranges, model watcher) only look up the shared reader prefix.
        readers = {
            a["resource"]["name"] for a in acls if a["resource"]["type"] == "group" and a["operations"] == ["Describe"]
        }
        assert readers == ({READER_GROUP} if component in ("train", "scorer") else set()), component
        groups -= readers
        if component == "ksqldb":
            internal = f"_confluent-ksql-{env['KSQL_KSQL_SERVICE_ID']['value']}"
            assert groups == {internal}
            assert {a["resource"]["name"] for a in acls if a["resource"].get("patternType") == "prefix"} == {internal}
            assert literal_topics(acls, "All") == {f"{env['KSQL_KSQL_SERVICE_ID']['value']}ksql_processing_log"}
            assert [a["operations"] for a in acls if a["resource"]["type"] == "cluster"] == [["DescribeConfigs"]]
        elif "STREAMTRAIN_GROUP_ID" in env:
            assert groups == {env["STREAMTRAIN_GROUP_ID"]["value"]} == {group}
        else:
            assert groups == set(), component
        monkeypatch.undo()  # a fresh environment for the next program


def test_scorer_may_not_write_raw_or_models():
    acls = users(rendered())["demo-scorer-kafka"]["spec"]["authorization"]["acls"]
    assert "streamtrain.telemetry.raw" not in literal_topics(acls, "Write")
    assert "streamtrain.models" not in literal_topics(acls, "Write")
    assert "streamtrain.scores" in literal_topics(acls, "Write")


# --- authentication: none ----------------------------------------------------------------------------


@pytest.mark.parametrize("example", ["minimal", "full"])
def test_authentication_none_renders_what_it_did_before(example):
    children = rendered(example, kafka(authentication="none"))
    assert not users(children)
    k = next(m for m in children if m["kind"] == "Kafka")["spec"]
    assert k["kafka"]["listeners"] == [{"name": "plain", "port": 9092, "type": "internal", "tls": False}]
    assert "authorization" not in k["kafka"] and k["entityOperator"] == {"topicOperator": {}}
    for component, pod in pods(children).items():
        env = env_of(pod)
        assert not set(SECURITY.values()) & set(env) and not any(n.startswith("KSQL_S") for n in env), component
        assert not any(
            m["mountPath"].startswith("/var/run/streamtrain")
            and m["mountPath"]
            not in (render_signing.SIGNING_MOUNT, render_mqtt_tls.CA_MOUNT, render_mqtt_tls.KEYSTORE_MOUNT)
            + (connections.MQTT_USERS_MOUNT, connections.MQTT_PASSWORD_MOUNT, connections.MQTT_DEVICES_MOUNT)
            for m in pod["spec"]["containers"][0]["volumeMounts"]
        )
        if "STREAMTRAIN_KAFKA_BOOTSTRAP" in env:
            assert env["STREAMTRAIN_KAFKA_BOOTSTRAP"]["value"].endswith("-kafka-bootstrap:9092")


def test_external_without_authentication_is_plaintext():
    children = rendered("external")
    for component, pod in pods(children).items():
        assert not set(SECURITY.values()) & set(env_of(pod)), component


# --- HiveMQ and ksqlDB: read-only root ---------------------------------------------------------------


@pytest.mark.parametrize("component", ["hivemq", "ksqldb"])
def test_third_party_pods_are_read_only_and_hardened(component):
    pod = pods(rendered("full"))[component]
    c = pod["spec"]["containers"][0]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
    expected = {"hivemq": {"/opt/hivemq/data", "/opt/hivemq/log", "/tmp"}, "ksqldb": {"/etc/ksqldb", "/tmp"}}[component]
    assert writable == expected
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    for m in c["volumeMounts"]:
        if not m.get("readOnly"):
            if component == "hivemq" and m["mountPath"] == "/opt/hivemq/data":  # durable: the broker's own claim
                assert vols[m["name"]] == {
                    "name": m["name"],
                    "persistentVolumeClaim": {"claimName": "plant-7-hivemq-data"},
                }, m
            else:
                assert "emptyDir" in vols[m["name"]], m


def test_turning_authentication_off_prunes_the_users():
    from streamtrain.operator import children

    before, after = rendered(), rendered(change=kafka(authentication="none"))
    pruned = {children.key(m) for m in children.stale(before, after)}
    assert pruned == {("KafkaUser", u) for u in users(before)}
