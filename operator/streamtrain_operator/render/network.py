"""Who may connect to a pipeline's Pods: NetworkPolicies, ingress only.

One policy denies every ingress to the pipeline's own Pods (those carrying its identity labels); the others
open exactly what some client needs:

- the MQTT listener of the managed broker to the simulator and the bridge, and to the devices
  (``networkPolicies.devices``: any source by default, since real devices publish from outside the cluster);
- ksqlDB's port to the Pods of the same pipeline (its servers forward queries to each other);
- the training workers' TensorFlow port (2222: it runs any graph sent to it) to the Pods of the same Job:
  the one-off Job by the ``batch.kubernetes.io/job-name`` label Kubernetes sets on its Pods, the Jobs of
  the retraining CronJob (named at run time, at most one at a time) by a label of their template;
- the metrics port to the monitoring Pods (``networkPolicies.monitoring``) and to the operator, which reads
  the scorers' /metrics for the status.

The managed Kafka cluster's Pods are not selected (Strimzi names them ``app.kubernetes.io/name: kafka``):
Strimzi renders their NetworkPolicies itself. Egress stays open: the brokers may live outside the cluster
under names the operator cannot turn into addresses, and every Pod needs the cluster DNS.
"""

from __future__ import annotations

import copy

from streamtrain.operator.render.connections import mqtt_container_port
from streamtrain.operator.render.objects import METRICS_PORT, Manifest, meta
from streamtrain.operator.training_workers import WORKER_PORT

COMPONENT = "network-policy"
#: The label Kubernetes (1.27+) puts on every Pod of a Job, with the Job's name.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
#: On the Pods of the retraining CronJob's Jobs (their Job names are chosen at run time).
TRAINING_RUN_LABEL = "streamtrain.io/training-run"
SCHEDULED_RUN = "scheduled"
KSQLDB_PORT = 8088
#: The operator's Pods, as the chart labels them, in whichever namespace it runs.
OPERATOR_PEER = {
    "namespaceSelector": {},
    "podSelector": {
        "matchLabels": {"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/component": "operator"}
    },
}


def pipeline_pods(name: str) -> dict:
    """Every Pod the operator renders for pipeline ``name`` (not the Kafka Pods Strimzi labels its own way,
    nor the operator's: the chart labels those ``managed-by: Helm``)."""
    return {
        "matchLabels": {
            "app.kubernetes.io/name": "streamtrain",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "streamtrain-operator",
        }
    }


def component_pods(name: str, component: str, **extra: str) -> dict:
    return {"matchLabels": {**pipeline_pods(name)["matchLabels"], "app.kubernetes.io/component": component, **extra}}


def _tcp(port: int) -> dict:
    return {"protocol": "TCP", "port": port}


def policy(name: str, namespace: str, child: str, pods: dict, ingress: list[dict]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(name, f"{name}-{child}"[:63], COMPONENT, namespace),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def device_peers(name: str, devices: dict) -> list[dict] | None:
    """Who may open MQTT connections; None: any source (a rule without ``from``)."""
    if devices["anywhere"]:
        return None
    programs = {**pipeline_pods(name), "matchExpressions": _in("app.kubernetes.io/component", ["simulator", "bridge"])}
    peers: list[dict] = [{"podSelector": programs}]
    peers += [{"ipBlock": {"cidr": cidr}} for cidr in devices["cidrs"]]
    peers += [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}} for ns in devices["namespaces"]
    ]
    return peers


def _in(key: str, values: list[str]) -> list[dict]:
    return [{"key": key, "operator": "In", "values": values}]


def monitoring_peers(monitoring: dict) -> list[dict]:
    pods = {"matchLabels": dict(monitoring["podLabels"])}
    namespaces = monitoring["namespaces"]
    if not namespaces:
        return [{"namespaceSelector": {}, "podSelector": pods}]
    return [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}, "podSelector": pods}
        for ns in namespaces
    ]


def training_workers(name: str, namespace: str, job: str | None, scheduled: bool) -> list[Manifest]:
    """Port 2222 of each training Job's Pods, open to the Pods of that Job only."""
    out = []
    groups = []
    if job is not None:
        groups.append(("train-workers", component_pods(name, "train", **{JOB_NAME_LABEL: job})))
    if scheduled:
        groups.append(("train-workers-scheduled", component_pods(name, "train", **{TRAINING_RUN_LABEL: SCHEDULED_RUN})))
    for child, pods in groups:
        rule = {"from": [{"podSelector": copy.deepcopy(pods)}], "ports": [_tcp(WORKER_PORT)]}
        out.append(policy(name, namespace, child, pods, [rule]))
    return out


def network_policies(name: str, namespace: str, spec: dict, children: list[Manifest]) -> list[Manifest]:
    """The NetworkPolicies of one pipeline, given its other children (which components exist); none when
    ``networkPolicies.enabled`` is false."""
    settings = spec["networkPolicies"]
    if not settings["enabled"]:
        return []
    components = {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in children}
    out = [
        policy(name, namespace, "default-deny", pipeline_pods(name), []),
        policy(
            name,
            namespace,
            "metrics",
            pipeline_pods(name),
            [{"from": [*monitoring_peers(settings["monitoring"]), OPERATOR_PEER], "ports": [_tcp(METRICS_PORT)]}],
        ),
    ]
    if "hivemq" in components:
        rule: dict = {"ports": [_tcp(mqtt_container_port(spec))]}
        peers = device_peers(name, settings["devices"])
        if peers is not None:
            rule["from"] = peers
        out.append(policy(name, namespace, "mqtt", component_pods(name, "hivemq"), [rule]))
    if "ksqldb" in components:
        out.append(
            policy(
                name,
                namespace,
                "ksqldb",
                component_pods(name, "ksqldb"),
                [{"from": [{"podSelector": pipeline_pods(name)}], "ports": [_tcp(KSQLDB_PORT)]}],
            )
        )
    if spec["training"].get("workers", 1) > 1:
        jobs = [m["metadata"]["name"] for m in children if m["kind"] == "Job"]
        scheduled = any(m["kind"] == "CronJob" for m in children)
        out += training_workers(name, namespace, jobs[0] if jobs else None, scheduled)
    return out
