"""The rendered NetworkPolicies, evaluated offline with Kubernetes' own rules: a Pod that some policy
selects accepts a connection only on a port and from a peer that one of those policies allows."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from streamtrain.operator.render import network
from streamtrain.operator.training_workers import WORKER_PORT
from tests.unit.streamtrain_operator.test_render import ROOT, children, pod_templates

NS = "pipelines"
METRICS = 9400


@dataclass
class Pod:
    labels: dict[str, str]
    namespace: str = NS
    ip: str = "10.244.0.10"
    kind: str = "Pod"
    name: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def outside(ip: str) -> Pod:
    """A device outside the cluster: no labels, no namespace."""
    return Pod(labels={}, namespace="", ip=ip, kind="external")


def _matches(selector: dict, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        value = labels.get(e["key"])
        if e["operator"] == "In" and value not in e["values"]:
            return False
        if e["operator"] == "NotIn" and value in e["values"]:
            return False
        if e["operator"] == "Exists" and value is None:
            return False
        if e["operator"] == "DoesNotExist" and value is not None:
            return False
    return True


def _peer_matches(peer: dict, policy_ns: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return ipaddress.ip_address(source.ip) in ipaddress.ip_network(peer["ipBlock"]["cidr"])
    if source.kind == "external":
        return False
    if "namespaceSelector" in peer:
        ns_ok = _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": source.namespace})
    else:
        ns_ok = source.namespace == policy_ns
    return ns_ok and _matches(peer.get("podSelector", {}), source.labels)


def selecting(policies: list[dict], target: Pod) -> list[dict]:
    return [
        p
        for p in policies
        if p["metadata"]["namespace"] == target.namespace and _matches(p["spec"]["podSelector"], target.labels)
    ]


def allowed(policies: list[dict], source: Pod, target: Pod, port: int) -> bool:
    chosen = selecting(policies, target)
    if not chosen:
        return True  # not isolated
    for p in chosen:
        for rule in p["spec"].get("ingress", []):
            if rule.get("ports") and not any(r["port"] == port for r in rule["ports"]):
                continue
            if not rule.get("from") or any(_peer_matches(peer, NS, source) for peer in rule["from"]):
                return True
    return False


def pods(rendered: list[dict]) -> list[Pod]:
    """The Pods each Deployment, Job and CronJob makes, with the labels Kubernetes adds to Job Pods."""
    out = []
    for m in rendered:
        for template in pod_templates(m):
            labels = dict(template["metadata"]["labels"])
            if m["kind"] == "Job":
                labels[network.JOB_NAME_LABEL] = m["metadata"]["name"]
            if m["kind"] == "CronJob":
                labels[network.JOB_NAME_LABEL] = f"{m['metadata']['name']}-29400000"
            out.append(Pod(labels=labels, kind=m["kind"], name=m["metadata"]["name"]))
    return out


def policies_of(rendered: list[dict]) -> list[dict]:
    return [m for m in rendered if m["kind"] == "NetworkPolicy"]


def component(rendered: list[dict], name: str, kind: str = "Deployment") -> Pod:
    return next(p for p in pods(rendered) if p.labels["app.kubernetes.io/component"] == name and p.kind == kind)


def workers(spec: dict) -> None:
    spec["training"] = {**spec.get("training", {}), "workers": 3, "schedule": "0 * * * *"}


PROMETHEUS = Pod(labels={"app.kubernetes.io/name": "prometheus"}, namespace="monitoring", ip="10.244.1.5")
OPERATOR = Pod(
    labels={"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/component": "operator"},
    namespace="streamtrain-system",
)
STRANGER = Pod(labels={"app": "curious"}, namespace="tenant-b", ip="10.244.2.7")


@pytest.mark.parametrize("example", sorted(p.stem for p in (ROOT / "examples").glob("*.yaml")))
def test_every_pod_of_a_pipeline_is_selected_by_the_default_deny_policy(example):
    rendered = children(example, workers)
    policies = policies_of(rendered)
    deny = [p for p in policies if p["spec"]["ingress"] == []]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    every = pods(rendered)
    assert {"scorer", "train"} <= {p.labels["app.kubernetes.io/component"] for p in every}
    for pod in every:
        assert selecting(deny, pod), (example, pod.name)
        # Nothing of the pipeline is open to a Pod of another tenant on any port it serves.
        for port in (METRICS, WORKER_PORT, network.KSQLDB_PORT):
            assert not allowed(policies, STRANGER, pod, port), (example, pod.name, port)


def test_the_worker_port_is_reachable_only_from_the_pods_of_the_same_job():
    rendered = children("full", workers)
    policies = policies_of(rendered)
    one_off = [p for p in pods(rendered) if p.kind == "Job"]
    scheduled = [p for p in pods(rendered) if p.kind == "CronJob"]
    assert one_off and scheduled
    job_pod, scheduled_pod = one_off[0], scheduled[0]
    sibling = Pod(labels=dict(job_pod.labels), ip="10.244.0.11")
    scheduled_sibling = Pod(labels=dict(scheduled_pod.labels), ip="10.244.0.12")
    older_job = Pod(labels={**job_pod.labels, network.JOB_NAME_LABEL: "p-train-0000000000"}, ip="10.244.0.13")
    scorer = component(rendered, "scorer")
    other_pipeline = Pod(
        labels={**job_pod.labels, "app.kubernetes.io/instance": "other"}, namespace="tenant-b", ip="10.244.3.1"
    )

    assert allowed(policies, sibling, job_pod, WORKER_PORT)
    assert allowed(policies, scheduled_sibling, scheduled_pod, WORKER_PORT)
    for intruder in (scheduled_pod, older_job, scorer, other_pipeline, STRANGER, PROMETHEUS, OPERATOR):
        assert not allowed(policies, intruder, job_pod, WORKER_PORT), intruder
    for intruder in (job_pod, older_job, scorer, other_pipeline, STRANGER):
        assert not allowed(policies, intruder, scheduled_pod, WORKER_PORT), intruder
    # One worker serves no gRPC port: nothing opens 2222.
    single = policies_of(children("full", lambda s: s.setdefault("training", {}).update(workers=1)))
    assert not any(r["port"] == WORKER_PORT for p in single for rule in p["spec"]["ingress"] for r in rule["ports"])


def test_metrics_are_readable_only_by_the_monitoring_pods_and_the_operator():
    rendered = children("full")
    policies = policies_of(rendered)
    everything = pods(rendered)
    unlabelled_in_monitoring = Pod(labels={"app": "grafana"}, namespace="monitoring")
    for pod in everything:
        assert allowed(policies, PROMETHEUS, pod, METRICS), pod.name
        assert allowed(policies, OPERATOR, pod, METRICS), pod.name  # the status reads the scorers' /metrics
        for reader in (STRANGER, unlabelled_in_monitoring, component(rendered, "simulator")):
            assert not allowed(policies, reader, pod, METRICS), (reader, pod.name)
        assert not allowed(policies, PROMETHEUS, pod, WORKER_PORT)

    def only_monitoring_namespace(spec):
        spec["networkPolicies"] = {"monitoring": {"namespaces": ["observability"], "podLabels": {"app": "vm"}}}

    narrowed = children("full", only_monitoring_namespace)
    scorer = component(narrowed, "scorer")
    victoria = Pod(labels={"app": "vm"}, namespace="observability")
    assert allowed(policies_of(narrowed), victoria, scorer, METRICS)
    assert not allowed(policies_of(narrowed), Pod(labels={"app": "vm"}, namespace="tenant-b"), scorer, METRICS)
    assert not allowed(policies_of(narrowed), PROMETHEUS, scorer, METRICS)


def test_mqtt_is_open_to_devices_by_default_and_to_the_named_sources_on_request():
    rendered = children("full")
    hivemq = component(rendered, "hivemq")
    # The port the broker serves: MQTT over TLS by default (test_mqtt_tls_render.py covers plain MQTT).
    port = 8883
    broker = next(m for m in rendered if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-hivemq"))
    assert broker["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == port
    assert allowed(policies_of(rendered), outside("203.0.113.9"), hivemq, port)  # today's behaviour
    assert not allowed(policies_of(rendered), outside("203.0.113.9"), hivemq, 1883)
    assert not allowed(policies_of(rendered), outside("203.0.113.9"), hivemq, METRICS + 1)

    def devices(spec):
        spec["networkPolicies"] = {
            "devices": {"anywhere": False, "cidrs": ["198.51.100.0/24"], "namespaces": ["gateways"]}
        }

    narrowed = children("full", devices)
    policies = policies_of(narrowed)
    hivemq = component(narrowed, "hivemq")
    assert allowed(policies, outside("198.51.100.20"), hivemq, port)
    assert allowed(policies, Pod(labels={"app": "gw"}, namespace="gateways"), hivemq, port)
    assert allowed(policies, component(narrowed, "simulator"), hivemq, port)
    assert not allowed(policies, outside("203.0.113.9"), hivemq, port)
    assert not allowed(policies, STRANGER, hivemq, port)
    assert not allowed(policies, component(narrowed, "scorer"), hivemq, port)


def test_ksqldb_is_reachable_from_its_own_pipeline_only():
    rendered = children("full", lambda s: s["preprocessing"].update(engine="ksqldb"))
    policies = policies_of(rendered)
    ksqldb = component(rendered, "ksqldb")
    assert allowed(policies, component(rendered, "scorer"), ksqldb, network.KSQLDB_PORT)
    other = Pod(labels={**ksqldb.labels, "app.kubernetes.io/instance": "other"}, namespace="tenant-b")
    for intruder in (other, STRANGER, PROMETHEUS):
        assert not allowed(policies, intruder, ksqldb, network.KSQLDB_PORT)


def test_kafka_pods_are_left_to_strimzis_own_policies():
    # Strimzi labels its broker Pods app.kubernetes.io/name: kafka and renders their NetworkPolicies itself.
    rendered = children("full")
    broker = Pod(
        labels={"app.kubernetes.io/name": "kafka", "app.kubernetes.io/instance": "p", "strimzi.io/cluster": "p"}
    )
    assert not selecting(policies_of(rendered), broker)


def test_disabled_renders_no_network_policy():
    assert policies_of(children("full"))
    off = children("full", lambda s: s.update(networkPolicies={"enabled": False}))
    assert not policies_of(off)
    assert {m["kind"] for m in off} == {m["kind"] for m in children("full")} - {"NetworkPolicy"}


@pytest.mark.parametrize("values", [{}, {"watchNamespaces": ["team-a"]}], ids=["cluster", "namespaced"])
def test_the_operator_may_apply_and_prune_network_policies_in_both_installs(values):
    from tests.unit.repo.test_chart import rendered

    roles = [d for d in rendered(values) if d["kind"] in ("ClusterRole", "Role")]
    verbs = {
        (d["kind"], v)
        for d in roles
        for rule in d["rules"]
        if "networking.k8s.io" in rule["apiGroups"] and "networkpolicies" in rule["resources"]
        for v in rule["verbs"]
    }
    kind = "Role" if values else "ClusterRole"
    assert {v for k, v in verbs if k == kind} == {"get", "list", "create", "patch", "delete"}, verbs
    assert all(k == kind for k, _ in verbs), "rights in the namespaces served only"
