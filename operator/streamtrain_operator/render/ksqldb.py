"""ksqlDB as the preprocessing engine: the same preprocessing spec rendered to SQL (a ConfigMap) and
run headless by the ksqlDB server image, with the same Kafka identity rules as our programs."""

from __future__ import annotations

from streamtrain.operator.render.connections import (
    KAFKA_CA_MOUNT,
    SASL_MECHANISM,
    kafka_bootstrap,
    kafka_credentials,
    kafka_volumes,
    ksql_service_id,
    preprocess_spec,
    settings_for,
)
from streamtrain.operator.render.objects import Manifest, deployment, digest, image_security, labels, meta
from streamtrain.preprocessing import ksql

KSQL_IMAGE = "confluentinc/ksqldb-server:0.29.0"
KSQL_MOUNT = "/etc/ksqldb-queries"  # not /etc/ksqldb: the image writes its properties there at start
KSQL_CONFIG = "/etc/ksqldb"
#: The ksqlDB image (uid 1000, appuser) writes its properties and log4j files into /etc/ksqldb at start
#: (from the KSQL_* environment) and Kafka Streams state under java.io.tmpdir.
KSQL_UID = 1000


def _ksql(prop: str, value: str | None = None, secret: dict | None = None) -> dict:
    """A ksqlDB server property as the image reads it from the environment (KSQL_ + upper case, . -> _)."""
    e: dict = {"name": "KSQL_" + prop.upper().replace(".", "_")}
    if secret is not None:
        e["valueFrom"] = {"secretKeyRef": {"name": secret["name"], "key": secret["key"]}}
    else:
        e["value"] = value
    return e


def ksql_security_env(creds: dict | None) -> list[dict]:
    """The same security for ksqlDB's Kafka clients: the JAAS line comes from a Secret (Strimzi writes one;
    for an external cluster it is assembled by Kubernetes from the password Secret), the CA as a PEM truststore."""
    if creds is None:
        return []
    out = [_ksql("security.protocol", "SASL_SSL"), _ksql("sasl.mechanism", SASL_MECHANISM)]
    if creds["jaas"] is not None:
        out.append(_ksql("sasl.jaas.config", secret=creds["jaas"]))
    else:
        # Not KSQL_-prefixed, so the image does not copy it into its properties; $(...) is expanded by the kubelet.
        out.append({"name": "KAFKA_SASL_PASSWORD", "valueFrom": {"secretKeyRef": dict(creds["password"])}})
        out.append(
            _ksql(
                "sasl.jaas.config",
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{creds["username"]}" password="$(KAFKA_SASL_PASSWORD)";',
            )
        )
    if creds["ca"] is not None:
        out += [_ksql("ssl.truststore.type", "PEM"), _ksql("ssl.truststore.location", f"{KAFKA_CA_MOUNT}/ca.crt")]
    return out


def ksqldb(name: str, namespace: str, spec: dict) -> list[Manifest]:
    statements = ksql.render(preprocess_spec(spec), settings_for(name, spec))
    cm: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, f"{name}-ksqldb-queries", "ksqldb", namespace),
        "data": {"queries.sql": "\n\n".join(statements) + "\n"},
    }
    creds = kafka_credentials(name, spec, "ksqldb")
    kafka_vols, kafka_mounts = kafka_volumes(creds, password_file=False)
    pod = {
        "metadata": {
            "labels": labels(name, "ksqldb"),
            "annotations": {"streamtrain.io/queries-hash": digest(cm["data"])},
        },
        "spec": {
            "automountServiceAccountToken": False,  # ksqlDB never calls the Kubernetes API
            "securityContext": {"runAsNonRoot": True, "runAsUser": KSQL_UID, "fsGroup": KSQL_UID},
            "containers": [
                {
                    "name": "ksqldb",
                    "image": KSQL_IMAGE,
                    "env": [
                        _ksql("bootstrap.servers", kafka_bootstrap(name, spec)),
                        _ksql("ksql.service.id", ksql_service_id(name)),
                        _ksql("ksql.queries.file", f"{KSQL_MOUNT}/queries.sql"),
                        _ksql("listeners", "http://0.0.0.0:8088"),
                        *ksql_security_env(creds),
                    ],
                    "ports": [{"name": "http", "containerPort": 8088, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 10},
                    "securityContext": image_security(KSQL_UID),
                    "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                    "volumeMounts": [
                        {"name": "queries", "mountPath": KSQL_MOUNT, "readOnly": True},
                        {"name": "config", "mountPath": KSQL_CONFIG},
                        {"name": "tmp", "mountPath": "/tmp"},
                        *kafka_mounts,
                    ],
                }
            ],
            # The generated properties may hold the JAAS line: memory, never the node's disk.
            "volumes": [
                {"name": "queries", "configMap": {"name": cm["metadata"]["name"]}},
                {"name": "config", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                {"name": "tmp", "emptyDir": {}},
                *kafka_vols,
            ],
        },
    }
    # Servers with one ksql.service.id share the queries' partitions like any consumer group.
    return [cm, deployment(name, namespace, "ksqldb", spec["preprocessing"]["replicas"], pod)]
