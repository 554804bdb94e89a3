"""Pure rendering of a StreamingTraining into children, validated offline: Kubernetes kinds against
the schemas of several Kubernetes versions (strict: unknown fields fail), Strimzi kinds against
Strimzi 1.2.0's published CRD schemas, and every environment variable against the program's settings."""

from __future__ import annotations

import copy
import json
import os

import jsonschema
import kubernetes_validate
import pytest

from streamtrain.kafka import KafkaSecurity
from streamtrain.mqtt import MqttTls
from streamtrain.operator import render, validate
from streamtrain.operator.render import connections, objects, programs, trainer
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example

STRIMZI = ROOT / "tests/k8s/schemas/strimzi-1.2.0"
STRIMZI_KINDS = {
    "Kafka": "kafka",
    "KafkaNodePool": "kafkanodepool",
    "KafkaTopic": "kafkatopic",
    "KafkaUser": "kafkauser",
}
#: Settings fields the operator passes although no program reads them yet (credentials are Secret-only by design).
NOT_YET_READ = {"MQTT_USERNAME", "MQTT_PASSWORD"}


def children(example: str, change=None) -> list[dict]:
    r = load_example(ROOT / f"examples/{example}.yaml")
    if change:
        change(r["spec"])
    spec = validate.defaulted(r)["spec"]
    return render.render(r["metadata"]["name"], "pipelines", spec)


ALL = [(ex, m) for ex in ("minimal", "full", "external", "secure", "production") for m in children(ex)]
#: Validated against KEDA's published schemas in test_scaling.py.
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}


def _id(item):
    ex, m = item
    return f"{ex}-{m['kind']}-{m['metadata']['name']}"


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_kubernetes_children_validate_strictly(version):
    checked = 0
    for ex, m in ALL:
        if m["kind"] in STRIMZI_KINDS or m["kind"] in KEDA_KINDS:
            continue
        kubernetes_validate.validate(m, version, strict=True)
        checked += 1
    assert checked >= 20


def test_strict_validation_catches_a_typo():
    dep = copy.deepcopy(next(m for _, m in ALL if m["kind"] == "Deployment"))
    dep["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSIONS[-1], strict=True)


def _strimzi_validator(kind: str) -> jsonschema.Draft7Validator:
    data = json.loads((STRIMZI / f"{STRIMZI_KINDS[kind]}.json").read_text())
    return jsonschema.Draft7Validator(validate.to_jsonschema(data["openAPIV3Schema"]))


@pytest.mark.parametrize("item", [i for i in ALL if i[1]["kind"] in STRIMZI_KINDS], ids=_id)
def test_strimzi_children_validate_against_strimzi_schema(item):
    _, m = item
    assert m["apiVersion"] == "kafka.strimzi.io/v1"
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _strimzi_validator(m["kind"]).iter_errors(m)
    ]
    assert errors == []


def test_strimzi_schema_catches_a_mistake():
    kafka = copy.deepcopy(next(m for _, m in ALL if m["kind"] == "Kafka"))
    del kafka["spec"]["kafka"]["listeners"][0]["tls"]
    assert list(_strimzi_validator("Kafka").iter_errors(kafka))


def test_managed_pipeline_is_complete_and_kraft():
    kinds = [(m["kind"], m["metadata"]["name"]) for m in children("full")]
    for expected in [
        ("Kafka", "plant-7"),
        ("KafkaNodePool", "plant-7-dual"),
        ("Deployment", "plant-7-hivemq"),
        ("Service", "plant-7-hivemq"),
        ("Deployment", "plant-7-simulator"),
        ("Deployment", "plant-7-bridge"),
        ("ConfigMap", "plant-7-ksqldb-queries"),
        ("Deployment", "plant-7-ksqldb"),
        ("CronJob", "plant-7-train"),
        ("Deployment", "plant-7-scorer"),
    ]:
        assert expected in kinds
    pool = next(m for m in children("full") if m["kind"] == "KafkaNodePool")
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == "plant-7"
    assert sorted(pool["spec"]["roles"]) == ["broker", "controller"] and pool["spec"]["replicas"] == 3
    topics = {m["spec"]["topicName"]: m for m in children("full") if m["kind"] == "KafkaTopic"}
    assert topics["streamtrain.models"]["spec"]["config"]["cleanup.policy"] == "compact"
    assert topics["streamtrain.telemetry.raw"]["spec"]["partitions"] == 12
    assert all(t["metadata"]["labels"]["strimzi.io/cluster"] == "plant-7" for t in topics.values())


def test_external_pipeline_has_no_brokers_or_simulator():
    kinds = {m["kind"] for m in children("external")}
    assert not kinds & {"Kafka", "KafkaNodePool", "KafkaTopic"}
    names = {m["metadata"]["name"] for m in children("external")}
    assert "field-fleet-hivemq" not in names and "field-fleet-simulator" not in names
    bridge = next(m for m in children("external") if m["metadata"]["name"] == "field-fleet-bridge")
    env = {e["name"]: e for e in bridge["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STREAMTRAIN_MQTT_HOST"]["value"] == "mqtt.plant.example.com"
    assert env["STREAMTRAIN_KAFKA_BOOTSTRAP"]["value"].startswith("kafka-0.kafka.example.com:9092")
    assert env["STREAMTRAIN_MQTT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "field-mqtt", "key": "password"}


def test_ksqldb_queries_are_the_rendered_preprocessing():
    from streamtrain.preprocessing import ksql

    spec = validate.defaulted(load_example(ROOT / "examples/full.yaml"))["spec"]
    cm = next(m for m in children("full") if m["metadata"]["name"] == "plant-7-ksqldb-queries")
    for statement in ksql.render(connections.preprocess_spec(spec), connections.settings_for("plant-7", spec)):
        assert statement in cm["data"]["queries.sql"]
    dep = next(m for m in children("full") if m["metadata"]["name"] == "plant-7-ksqldb" and m["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["KSQL_KSQL_QUERIES_FILE"] == "/etc/ksqldb-queries/queries.sql"
    assert env["KSQL_BOOTSTRAP_SERVERS"] == "plant-7-kafka-bootstrap:9093"  # the SCRAM/TLS listener (default)
    mounts = {v["mountPath"]: v for v in dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/etc/ksqldb-queries"]["readOnly"] and not mounts["/etc/ksqldb"].get("readOnly")


SETTINGS = {
    "simulate": "streamtrain.simulator.settings:SimulatorSettings",
    "bridge": "streamtrain.bridge.app:BridgeSettings",
    "preprocess": "streamtrain.preprocessor.app:PreprocessSettings",
    "train": "streamtrain.trainer.train:TrainSettings",
    "score": "streamtrain.scorer.app:ScoreSettings",
    "models": "streamtrain.settings:CommonSettings",  # the pin Job: `streamtrain models pin`
}


@pytest.mark.parametrize("program", SETTINGS)
@pytest.mark.parametrize("example", ["minimal", "full", "external", "secure"])
def test_env_is_what_the_program_reads(program, example, monkeypatch, tmp_path):
    """Every STREAMTRAIN_* variable names a settings field and parses; a typo in the mapping fails here."""
    import importlib

    module, cls = SETTINGS[program].split(":")
    settings_cls = getattr(importlib.import_module(module), cls)
    spec = validate.defaulted(load_example(ROOT / f"examples/{example}.yaml"))["spec"]
    env = programs.env(program, "x", spec)
    fields = {f.upper() for f in settings_cls.model_fields}
    security = {KafkaSecurity.model_config["env_prefix"] + f.upper() for f in KafkaSecurity.model_fields}
    mqtt_tls = {MqttTls.model_config["env_prefix"] + f.upper() for f in MqttTls.model_fields}
    for e in env:
        key = e["name"].removeprefix("STREAMTRAIN_")
        assert key in fields or key in NOT_YET_READ or e["name"] in security | mqtt_tls, (
            f"{program}: {e['name']} is no field of {cls}"
        )
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
    if any(e["name"] in mqtt_tls for e in env):
        # The MQTT client's TLS (read in the programs' settings validators) with the CA file where the Pod has it.
        ca = tmp_path / "mqtt-ca.crt"
        ca.write_text("PEM")
        assert os.environ["STREAMTRAIN_MQTT_CA_FILE"].endswith("/ca.crt")
        monkeypatch.setenv("STREAMTRAIN_MQTT_CA_FILE", str(ca))
        assert MqttTls.from_env().ca_file == ca
    settings = settings_cls()
    if program != "simulate" and any(e["name"] in security for e in env):
        # The Kafka client security parses too, with the mounted files where the Pod has them.
        for var, content in (
            ("STREAMTRAIN_KAFKA_PASSWORD_FILE", "not-a-real-password"),
            ("STREAMTRAIN_KAFKA_CA_FILE", "PEM"),
        ):
            if var in os.environ:
                f = tmp_path / os.path.basename(os.environ[var])
                f.write_text(content)
                monkeypatch.setenv(var, str(f))
        sec = KafkaSecurity()
        assert sec.security_protocol == "SASL_SSL" and sec.librdkafka()["sasl.mechanism"] == "SCRAM-SHA-512"
    assert settings.kafka_bootstrap == connections.kafka_bootstrap("x", spec)
    assert settings.metrics_port == objects.METRICS_PORT


def test_fleet_size_reaches_the_simulator():
    dep = next(
        m
        for m in children("minimal", lambda s: s.update(fleet={"devices": 2500}))
        if m["metadata"]["name"] == "demo-simulator"
    )
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STREAMTRAIN_DEVICES"] == "2500"


def test_new_recipe_new_training_job_same_schedule_same_cronjob():
    def job(change=None):
        return next(m["metadata"]["name"] for m in children("full", change) if m["kind"] == "Job")

    assert job() == job()
    assert job() != job(lambda s: s["model"].update(epochs=5))
    assert job() != job(lambda s: s["preprocessing"].update(filter="temperature > 0"))
    assert job() == job(lambda s: s.setdefault("scorer", {}).update(replicas=7))


def test_preprocessing_change_rolls_the_preprocessor():
    def annotation(change=None):
        dep = next(m for m in children("minimal", change) if m["metadata"]["name"] == "demo-preprocess")
        return dep["spec"]["template"]["metadata"]["annotations"]["streamtrain.io/preprocessing-hash"]

    assert annotation() != annotation(lambda s: s.update(preprocessing={"features": ["temperature"]}))


def test_program_pods_are_hardened_and_probed():
    for _, m in ALL:
        if m["kind"] != "Deployment" or m["metadata"]["name"].endswith(("hivemq", "ksqldb")):
            continue
        c = m["spec"]["template"]["spec"]["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True and c["securityContext"]["runAsNonRoot"] is True
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert (
            c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        )
        sel = m["spec"]["selector"]["matchLabels"]
        assert set(sel) == {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component"}
        assert sel.items() <= m["spec"]["template"]["metadata"]["labels"].items()


def test_bad_preprocessing_is_refused_before_rendering():
    from streamtrain.preprocessing.spec import SpecError

    with pytest.raises((SpecError, ValueError), match="label"):
        children(
            "minimal",
            lambda s: s.update(
                preprocessing={"features": ["temperature"], "derived": [{"name": "leak", "expr": "label * 2"}]}
            ),
        )


def test_kafka_streams_engine_runs_the_jvm_scorer_image_with_the_same_settings():
    def scorer(change=None):
        return next(m for m in children("minimal", change) if m["metadata"]["name"] == "demo-scorer")

    py = scorer()["spec"]["template"]["spec"]["containers"][0]
    jvm = scorer(lambda s: s.setdefault("scorer", {}).update(engine="kafka-streams"))["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert py["args"] == ["score"] and "args" not in jvm
    assert jvm["image"] == py["image"].replace(":", "-scorer-streams:", 1)
    env = {e["name"]: e.get("value") for e in jvm["env"]}
    assert env["STREAMTRAIN_ENGINE"] == "kafka-streams"
    assert {k: v for k, v in env.items() if k != "STREAMTRAIN_ENGINE"} == {
        e["name"]: e.get("value") for e in py["env"] if e["name"] != "STREAMTRAIN_ENGINE"
    }
    assert jvm["securityContext"] == py["securityContext"] and jvm["readinessProbe"] == py["readinessProbe"]
    custom = scorer(
        lambda s: s.setdefault("scorer", {}).update(engine="kafka-streams", streamsImage="reg/jvm-scorer:1")
    )
    assert custom["spec"]["template"]["spec"]["containers"][0]["image"] == "reg/jvm-scorer:1"


def test_only_the_trainer_and_the_python_scorer_run_the_tensorflow_image():
    images: dict[str, set[str]] = {}
    for m in children("full") + children("minimal"):  # ksqlDB in one, the embedded preprocessor in the other
        if m["kind"] in ("Deployment", "Job", "CronJob"):
            for c in m["spec"].get("jobTemplate", m)["spec"]["template"]["spec"]["containers"]:
                images.setdefault(c["name"], set()).add(c["image"])
    image = load_example(ROOT / "examples/full.yaml")["spec"]["image"]
    repository, tag = image["repository"], image["tag"]
    assert load_example(ROOT / "examples/minimal.yaml")["spec"].get("image", image) == image
    for program in ("simulate", "bridge", "preprocess"):
        assert images[program] == {f"{repository}-lite:{tag}"}, program
    assert images["train"] == images["score"] == {f"{repository}:{tag}"}


def test_full_references_win_over_repository_and_tag():
    """What skaffold writes into spec.image after a build (skaffold.yaml resourceSelector)."""
    full, lite = "127.0.0.1:5000/st:dev@sha256:" + "a" * 64, "127.0.0.1:5000/st-lite:dev@sha256:" + "b" * 64
    rendered = children("minimal", lambda s: s.setdefault("image", {}).update(full=full, lite=lite))
    images = {
        c["name"]: c["image"]
        for m in rendered
        if m["kind"] in ("Deployment", "Job")
        for c in m["spec"]["template"]["spec"]["containers"]
    }
    assert images["train"] == images["score"] == full
    assert images["simulate"] == images["bridge"] == images["preprocess"] == lite
    job = next(m for m in rendered if m["kind"] == "Job")["metadata"]["name"]
    assert job not in {m["metadata"]["name"] for m in children("minimal") if m["kind"] == "Job"}, "new code, new run"


def test_a_null_field_and_an_absent_one_are_the_same_recipe():
    """A merge patch that sends `filter: null` removes the key on the server; the Job must not change."""
    spec = validate.defaulted(load_example(ROOT / "examples/minimal.yaml"))["spec"]
    with_null = copy.deepcopy(spec)
    with_null["preprocessing"]["filter"] = None
    without = copy.deepcopy(spec)
    without["preprocessing"].pop("filter", None)
    assert trainer.training_hash(with_null) == trainer.training_hash(without)
    changed = copy.deepcopy(spec)
    changed["preprocessing"]["filter"] = "temperature > 0"
    assert trainer.training_hash(changed) != trainer.training_hash(without)


def test_scorer_start_position_reaches_the_scorer_for_its_groups_first_start_only():
    def scorer_env(change=None):
        dep = next(m for m in children("minimal", change) if m["metadata"]["name"] == "demo-scorer")
        return {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}

    assert scorer_env()["STREAMTRAIN_START_AT"] == "committed"
    env = scorer_env(lambda s: s.setdefault("scorer", {}).update(startAt="latest"))
    assert env["STREAMTRAIN_START_AT"] == "latest" and env["STREAMTRAIN_START_AT_ONCE"] == "true"


def pod_templates(m: dict) -> list[dict]:
    if m["kind"] in ("Deployment", "Job"):
        return [m["spec"]["template"]]
    if m["kind"] == "CronJob":
        return [m["spec"]["jobTemplate"]["spec"]["template"]]
    return []


def test_no_pod_of_a_pipeline_mounts_a_service_account_token():
    # Issue 24: no program, HiveMQ nor ksqlDB calls the Kubernetes API; a mounted token would only serve an intruder.
    seen = set()
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for m in children(path.stem):
            for pod in pod_templates(m):
                assert pod["spec"]["automountServiceAccountToken"] is False, (path.stem, m["metadata"]["name"])
                seen.add(pod["metadata"]["labels"]["app.kubernetes.io/component"])
    assert {"hivemq", "simulator", "bridge", "preprocess", "ksqldb", "train", "scorer"} <= seen, seen
