"""Replicas, autoscaling and availability, offline: partition-bounded replicas reach the Deployments,
the KEDA children validate against KEDA 2.21.0's published CRD schemas (strict), every Deployment has a
PodDisruptionBudget and a topology spread, and the production example is a replicated Kafka."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest

from streamtrain.operator import render, validate
from streamtrain.operator.render import connections, trainer
from tests.k8s.conftest import ROOT, load_example
from tests.unit.repo.test_chart import rendered

KEDA = ROOT / "tests/k8s/schemas/keda-2.21.0"
KEDA_KINDS = {"ScaledObject": "scaledobject", "TriggerAuthentication": "triggerauthentication"}
EXAMPLES = ("minimal", "full", "external", "secure", "production", "ingest-extension")


def resource(example: str, change=None) -> dict:
    r = load_example(ROOT / f"examples/{example}.yaml")
    if change:
        change(r["spec"])
    return r


def children(example: str, change=None) -> list[dict]:
    r = resource(example, change)
    assert validate.errors(r) == [], validate.errors(r)
    return render.render(r["metadata"]["name"], "pipelines", validate.defaulted(r)["spec"])


def named(ms: list[dict], kind: str, name: str) -> dict:
    return next(m for m in ms if m["kind"] == kind and m["metadata"]["name"] == name)


def keda_errors(m: dict) -> list[str]:
    data = json.loads((KEDA / f"{KEDA_KINDS[m['kind']]}.json").read_text())
    assert m["apiVersion"] == f"{data['group']}/{data['version']}"
    v = jsonschema.Draft7Validator(validate.to_jsonschema(data["openAPIV3Schema"]))
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(m)]
    spec = m["spec"]  # the ScaledObject schema's one CEL rule, by hand
    if m["kind"] == "ScaledObject" and spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        errors.append("minReplicaCount must be less than or equal to maxReplicaCount")
    return errors


def test_production_is_a_replicated_kafka_with_partition_bounded_consumers():
    ms = children("production")
    pool = named(ms, "KafkaNodePool", "fleet-dual")
    assert pool["spec"]["replicas"] == 3 and sorted(pool["spec"]["roles"]) == ["broker", "controller"]
    config = named(ms, "Kafka", "fleet")["spec"]["kafka"]["config"]
    assert config["min.insync.replicas"] == 2 and config["default.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2 and config["offsets.topic.replication.factor"] == 3
    topics = [m for m in ms if m["kind"] == "KafkaTopic"]
    assert topics and all(t["spec"]["replicas"] == 3 for t in topics)
    assert named(ms, "Deployment", "fleet-preprocess")["spec"]["replicas"] == 3
    assert "replicas" not in named(ms, "Deployment", "fleet-scorer")["spec"]  # KEDA's HPA owns the count
    so = named(ms, "ScaledObject", "fleet-scorer")
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (3, 12)


@pytest.mark.parametrize("replicas", [1, 4, 6])
def test_replicas_up_to_the_partitions_reach_the_deployments(replicas):
    def change(s):
        s["kafka"] = {"partitions": 6}
        s["scorer"] = {"replicas": replicas}
        s["preprocessing"] = {"features": ["temperature"], "replicas": replicas}

    ms = children("minimal", change)
    assert named(ms, "Deployment", "demo-scorer")["spec"]["replicas"] == replicas
    assert named(ms, "Deployment", "demo-preprocess")["spec"]["replicas"] == replicas
    ksql = children("minimal", lambda s: (change(s), s["preprocessing"].update(engine="ksqldb")))
    assert named(ksql, "Deployment", "demo-ksqldb")["spec"]["replicas"] == replicas


@pytest.mark.parametrize(
    "field,change",
    [
        ("spec.scorer.replicas", lambda s: s.update(kafka={"partitions": 4}, scorer={"replicas": 5})),
        (
            "spec.preprocessing.replicas",
            lambda s: s.update(kafka={"partitions": 4}, preprocessing={"features": ["temperature"], "replicas": 5}),
        ),
        (
            "spec.scorer.autoscaling.maxReplicas",
            lambda s: s.update(
                kafka={"partitions": 4}, scorer={"replicas": 2, "autoscaling": {"enabled": True, "maxReplicas": 5}}
            ),
        ),
    ],
)
def test_replicas_above_the_partitions_are_refused_naming_the_field(field, change):
    errs = validate.errors(resource("minimal", change))
    assert len(errs) == 1 and errs[0].startswith(f"{field}: Invalid value: ") and "kafka.partitions" in errs[0], errs


def test_replicas_do_not_change_the_training_recipe():
    spec = validate.defaulted(resource("minimal"))["spec"]
    more = copy.deepcopy(spec)
    more["preprocessing"]["replicas"] = 3
    assert trainer.training_hash(more) == trainer.training_hash(spec)
    assert connections.preprocess_spec(more) == connections.preprocess_spec(spec)
    other = copy.deepcopy(spec)
    other["preprocessing"]["engine"] = "ksqldb"
    assert trainer.training_hash(other) != trainer.training_hash(spec)


def test_autoscaling_is_off_by_default_and_the_scorer_count_is_the_operators():
    ms = children("minimal")
    assert not [m for m in ms if m["kind"] in KEDA_KINDS]
    assert named(ms, "Deployment", "demo-scorer")["spec"]["replicas"] == 2


def autoscaled(example: str, **autoscaling) -> list[dict]:
    return children(example, lambda s: s.setdefault("scorer", {}).update(autoscaling={"enabled": True, **autoscaling}))


@pytest.mark.parametrize("example", EXAMPLES)
def test_keda_children_validate_against_kedas_schema(example):
    ms = autoscaled(example) if example != "production" else children(example)
    keda = [m for m in ms if m["kind"] in KEDA_KINDS]
    assert "ScaledObject" in {m["kind"] for m in keda}
    for m in keda:
        assert keda_errors(m) == [], m


def test_keda_schema_catches_mistakes():
    so = named(autoscaled("minimal"), "ScaledObject", "demo-scorer")
    typo = copy.deepcopy(so)
    typo["spec"]["maxReplicas"] = typo["spec"].pop("maxReplicaCount")
    assert keda_errors(typo)
    no_type = copy.deepcopy(so)
    del no_type["spec"]["triggers"][0]["type"]
    assert keda_errors(no_type)
    inverted = copy.deepcopy(so)
    inverted["spec"]["minReplicaCount"] = 7
    assert keda_errors(inverted)


def test_scaled_object_watches_the_scorers_group_on_the_features_topic():
    ms = autoscaled("minimal")
    so = named(ms, "ScaledObject", "demo-scorer")
    scorer = named(ms, "Deployment", "demo-scorer")
    env = {e["name"]: e.get("value") for e in scorer["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-scorer"}
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 6)  # max defaults to the partitions
    trigger = so["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == env["STREAMTRAIN_GROUP_ID"]
    assert meta["bootstrapServers"] == env["STREAMTRAIN_KAFKA_BOOTSTRAP"]
    assert (
        meta["topic"]
        == connections.settings_for("demo", validate.defaulted(resource("minimal"))["spec"]).topic_features
    )
    assert all(isinstance(v, str) for v in meta.values())  # KEDA's trigger metadata is map[string]string
    assert meta["offsetResetPolicy"] == "earliest" and meta["allowIdleConsumers"] == "false"
    latest = children(
        "minimal", lambda s: s.setdefault("scorer", {}).update(startAt="latest", autoscaling={"enabled": True})
    )
    assert (
        named(latest, "ScaledObject", "demo-scorer")["spec"]["triggers"][0]["metadata"]["offsetResetPolicy"] == "latest"
    )


def test_kafka_lag_is_read_with_the_scorers_own_identity():
    """SCRAM (the managed default): KEDA gets the scorers' password and CA Secrets and user name, nothing more."""
    ms = autoscaled("minimal")
    so = named(ms, "ScaledObject", "demo-scorer")
    auth = named(ms, "TriggerAuthentication", so["spec"]["triggers"][0]["authenticationRef"]["name"])
    assert so["spec"]["triggers"][0]["metadata"]["sasl"] == "scram_sha512"
    pod = named(ms, "Deployment", "demo-scorer")["spec"]["template"]["spec"]
    mounted = {
        (v["secret"]["secretName"], i["key"]) for v in pod["volumes"] if "secret" in v for i in v["secret"]["items"]
    }
    lent = {(r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert lent == mounted and {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password", "ca"}
    (user,) = auth["spec"]["env"]
    container = next(c for c in pod["containers"] if c["name"] == user["containerName"])
    assert user["parameter"] == "username" and user["name"] in {e["name"] for e in container["env"]}
    plain = children(
        "minimal",
        lambda s: (
            s.update(kafka={"authentication": "none"}),
            s.setdefault("scorer", {}).update(autoscaling={"enabled": True}),
        ),
    )
    assert not [m for m in plain if m["kind"] == "TriggerAuthentication"]
    meta = named(plain, "ScaledObject", "demo-scorer")["spec"]["triggers"][0]
    assert "authenticationRef" not in meta and "sasl" not in meta["metadata"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_deployment_has_a_disruption_budget_and_a_topology_spread(example):
    ms = children(example)
    deployments = [m for m in ms if m["kind"] == "Deployment"]
    budgets = {m["metadata"]["name"]: m for m in ms if m["kind"] == "PodDisruptionBudget"}
    assert len(deployments) >= 3 and len(budgets) == len(deployments)
    for d in deployments:
        pdb = budgets[d["metadata"]["name"]]
        selector = d["spec"]["selector"]["matchLabels"]
        assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["maxUnavailable"] == 1
        spread = d["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
        assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    # Both kinds are validated strictly against the Kubernetes schemas with every child in test_render.py.


def test_chart_operator_has_a_disruption_budget_and_a_topology_spread():
    docs = rendered()
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    selector = dep["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["maxUnavailable"] == 1
    spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    assert all(
        c["labelSelector"]["matchLabels"] == selector and c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread
    )
    assert not [
        d
        for d in rendered({"operator": {"podDisruptionBudget": {"enabled": False}}})
        if d["kind"] == "PodDisruptionBudget"
    ]
