"""Managed Kafka through Strimzi: a KRaft cluster (one dual-role node pool), one KafkaTopic per
pipeline topic and, with SCRAM, one KafkaUser per program with exactly its ACLs."""

from __future__ import annotations

from streamtrain import access
from streamtrain.operator.render.connections import (
    PLAIN_PORT,
    SCRAM,
    TLS_PORT,
    kafka_principals,
    kafka_user,
    kafka_users_managed,
    settings_for,
)
from streamtrain.operator.render.objects import Manifest, labels, meta
from streamtrain.topics import pipeline_topics

STRIMZI_API = "kafka.strimzi.io/v1"  # Strimzi 1.2.0, pinned in the chart


def _kafka_meta(name: str, child: str, namespace: str, **extra: str) -> dict:
    """Strimzi finds the children of a cluster by the strimzi.io/cluster label."""
    return {
        **meta(name, child, "kafka", namespace),
        "labels": {**labels(name, "kafka"), "strimzi.io/cluster": name, **extra},
    }


def strimzi(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """A KRaft Kafka cluster: one dual-role (controller+broker) node pool and one KafkaTopic per pipeline topic."""
    k = spec["kafka"]
    rf = k["replicationFactor"]
    secure = kafka_users_managed(spec)
    # With SCRAM: one TLS listener where every client authenticates, and ACLs (simple authorization)
    # decide what each KafkaUser may do; no plain listener is left for an intruder.
    listener = (
        {"name": "tls", "port": TLS_PORT, "type": "internal", "tls": True, "authentication": {"type": SCRAM}}
        if secure
        else {"name": "plain", "port": PLAIN_PORT, "type": "internal", "tls": False}
    )
    kafka: Manifest = {
        "apiVersion": STRIMZI_API,
        "kind": "Kafka",
        "metadata": meta(name, name, "kafka", namespace),
        "spec": {
            "kafka": {
                "version": k["version"],
                "listeners": [listener],
                "config": {
                    "offsets.topic.replication.factor": rf,
                    "transaction.state.log.replication.factor": rf,
                    "transaction.state.log.min.isr": min(rf, 2),
                    "default.replication.factor": rf,
                    "min.insync.replicas": min(rf, 2),
                },
            },
            # The User Operator turns the KafkaUsers into SCRAM credentials (Secrets) and ACLs.
            "entityOperator": {"topicOperator": {}, "userOperator": {}} if secure else {"topicOperator": {}},
        },
    }
    if secure:
        kafka["spec"]["kafka"]["authorization"] = {"type": "simple"}
    pool = {
        "apiVersion": STRIMZI_API,
        "kind": "KafkaNodePool",
        "metadata": _kafka_meta(name, f"{name}-dual", namespace),
        "spec": {
            "replicas": k["replicas"],
            "roles": ["controller", "broker"],
            "storage": {
                "type": "jbod",
                "volumes": [
                    {
                        "id": 0,
                        "type": "persistent-claim",
                        "size": k["storage"],
                        "deleteClaim": True,
                        "kraftMetadata": "shared",
                    }
                ],
            },
        },
    }
    return [kafka, pool, *kafka_topics(name, namespace, spec), *kafka_users(name, namespace, spec)]


def kafka_users(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """One KafkaUser per program that talks to Kafka, with exactly its ACLs (streamtrain.access). Strimzi
    answers with a Secret of the same name holding the generated password (keys password, sasl.jaas.config)."""
    if not kafka_users_managed(spec):
        return []
    s = settings_for(name, spec)
    windows = bool(spec["preprocessing"].get("windows"))
    return [
        {
            "apiVersion": STRIMZI_API,
            "kind": "KafkaUser",
            "metadata": _kafka_meta(
                name, kafka_user(name, component), namespace, **{"streamtrain.io/program": program}
            ),
            "spec": {
                "authentication": {"type": SCRAM},
                "authorization": {"type": "simple", "acls": access.strimzi_acls(program, s, group, windows=windows)},
            },
        }
        for component, program, group in kafka_principals(name, spec)
    ]


def kafka_topics(name: str, namespace: str, spec: dict) -> list[Manifest]:
    k = spec["kafka"]
    return [
        {
            "apiVersion": STRIMZI_API,
            "kind": "KafkaTopic",
            "metadata": _kafka_meta(name, f"{name}-{t.name}".replace("_", "-"), namespace),
            "spec": {
                "topicName": t.name,
                "partitions": t.partitions,
                "replicas": k["replicationFactor"],
                "config": dict(t.config),
            },
        }
        for t in pipeline_topics(settings_for(name, spec), k["partitions"], k["retentionHours"])
    ]
