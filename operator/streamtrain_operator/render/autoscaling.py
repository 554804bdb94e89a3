"""Optional autoscaling of the scorers on their consumer group's lag (spec.scorer.autoscaling): a KEDA
ScaledObject over the scorers' Deployment with KEDA's Kafka scaler and, when Kafka authenticates, a
TriggerAuthentication that lends KEDA the scorers' own identity (the same KafkaUser, whose ACLs already
cover describing its group and the features topic). Pinned against KEDA 2.21's CRD schemas."""

from __future__ import annotations

from streamtrain.operator.render.connections import (
    group_id,
    kafka_bootstrap,
    kafka_credentials,
    kafka_security_variable,
    settings_for,
)
from streamtrain.operator.render.objects import Manifest, meta

KEDA_API = "keda.sh/v1alpha1"
#: The scorers' container (programs.program_pod names it after the program), where KEDA reads the user name.
SCORER_CONTAINER = "score"


def trigger_authentication(name: str, namespace: str, creds: dict) -> Manifest:
    """Password and CA from the Secrets the scorers mount; the user name from the scorers' own
    environment (KEDA resolves the target container's variables), so no Secret is copied or written."""
    secrets = [{"parameter": "password", **creds["password"]}]
    if creds["ca"] is not None:
        secrets.append({"parameter": "ca", **creds["ca"]})
    return {
        "apiVersion": KEDA_API,
        "kind": "TriggerAuthentication",
        "metadata": meta(name, f"{name}-scorer-kafka-lag", "scorer", namespace),
        "spec": {
            "secretTargetRef": secrets,
            "env": [
                {
                    "parameter": "username",
                    "name": kafka_security_variable("username"),
                    "containerName": SCORER_CONTAINER,
                }
            ],
        },
    }


def scorer_autoscaling(name: str, namespace: str, spec: dict) -> list[Manifest]:
    a = spec["scorer"]["autoscaling"]
    if not a["enabled"]:
        return []
    creds = kafka_credentials(name, spec, "scorer")
    trigger: Manifest = {
        "type": "kafka",
        "metadata": {
            "bootstrapServers": kafka_bootstrap(name, spec),
            "consumerGroup": group_id(name, "scorer"),
            "topic": settings_for(name, spec).topic_features,
            "lagThreshold": str(a["lagThreshold"]),
            # A group without offsets yet starts where the scorers start: all of the topic is lag, or none.
            "offsetResetPolicy": "latest" if spec["scorer"]["startAt"] == "latest" else "earliest",
            # Never more scorers than partitions: an idle member only slows every rebalance.
            "allowIdleConsumers": "false",
        },
    }
    out: list[Manifest] = []
    if creds is not None:
        auth = trigger_authentication(name, namespace, creds)
        trigger["metadata"].update({"sasl": "scram_sha512", "tls": "enable"})
        trigger["authenticationRef"] = {"name": auth["metadata"]["name"]}
        out.append(auth)
    out.append(
        {
            "apiVersion": KEDA_API,
            "kind": "ScaledObject",
            "metadata": meta(name, f"{name}-scorer", "scorer", namespace),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-scorer"},
                "minReplicaCount": a["minReplicas"],
                "maxReplicaCount": a.get("maxReplicas") or spec["kafka"]["partitions"],
                "pollingInterval": a["pollingInterval"],
                "triggers": [trigger],
            },
        }
    )
    return out
