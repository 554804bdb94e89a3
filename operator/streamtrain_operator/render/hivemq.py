"""The managed MQTT broker: HiveMQ CE as one Deployment and its Service.

With spec.mqtt.authentication: none the stock image (spec.mqtt.image) runs as its own uid with its bundled
allow-all extension. With credentials (the default), StreamTrain's launcher
(images/hivemq.Dockerfile, uid UID) runs the same broker with the users file of
spec.mqtt.usersSecretRef, or of the operator's Secret <name>-mqtt-credentials (streamtrain.operator.mqtt_users),
mounted read-only and passed as its last argument: it refuses unknown users
and wrong passwords and authorizes devices and the bridge (README "Who may connect"). The launcher
reads the file at start: after changing the Secret, restart the Deployment.

With spec.mqtt.ingest: extension the launcher image runs too: it carries StreamTrain's ingestion
extension (bridge/hivemq-extension), configured here by STREAMTRAIN_INGEST_* variables (spec.ingest's
mapping with the bridge's STREAMTRAIN_INGEST_MAPPING / _TOPICS), which writes every accepted publish to the raw topic (dead letters with their reason) before its PUBACK, and serves
its metrics on the programs' metrics port. No bridge Deployment is rendered then.

The data folder (sessions and queued QoS 1 messages the broker has already acknowledged to devices) is a
PersistentVolumeClaim by default (spec.mqtt.storage), so a restart or a reschedule loses none of them. The
broker's rollout stops the old Pod before it starts the new one (a rolling update with no surge), whatever the
storage: a ReadWriteOnce claim cannot be held by Pods on two nodes, and two brokers must never share one file
persistence. Not the Recreate type: switching a Deployment's type by server-side apply is refused while
the server-defaulted rollingUpdate of an existing one stays (a real API server does refuse it), and
pipelines made before the claim existed must upgrade in place.

Either image runs the config.xml every StreamTrain broker runs (``streamtrain.mqtt.hivemq_config_xml``: the
maximum packet size from the telemetry payload limit, the queue, file persistence), rendered into a
ConfigMap and mounted where the image reads it; its hash in the Pod template restarts the broker when the
text changes.
"""

from __future__ import annotations

from streamtrain.mqtt import hivemq_config_xml
from streamtrain.operator.ingest import ingest_env as mapping_env
from streamtrain.operator.render import mqtt_tls
from streamtrain.operator.render.connections import (
    MQTT_USERS_MOUNT,
    mqtt_container_port,
    mqtt_credentials,
    mqtt_endpoint,
    mqtt_users_ref,
    secret_file_volume,
    settings_for,
)
from streamtrain.operator.render.objects import (
    METRICS_PORT,
    UID,
    Manifest,
    deployment,
    digest,
    image_security,
    labels,
    meta,
    service,
)

MQTT_PORT_NAME = "mqtt"
#: The uid the stock HiveMQ CE image runs as.
HIVEMQ_UID = 10000
#: Every path either image writes: persistence, logs, and the JVM's temporary files (Netty unpacks its
#: native transport there). The extensions folder stays the image's own (read-only): an emptyDir there
#: would hide the stock image's allow-all extension (the launcher embeds its own).
WRITES = {"data": "/opt/hivemq/data", "log": "/opt/hivemq/log", "tmp": "/tmp"}
#: Where each image reads config.xml: the stock image from its conf folder (only that file is replaced:
#: the folder also holds its logback.xml), the launcher from the folder its entrypoint names.
STOCK_CONFIG = "/opt/hivemq/conf/config.xml"
LAUNCHER_CONFIG_DIR = "/opt/streamtrain/conf"
CONFIG_KEY = "config.xml"
#: The broker's rollout: the old Pod goes before the new one comes (one replica, no surge).
ONE_AT_A_TIME = {"maxSurge": 0, "maxUnavailable": 1}


def hivemq_data(name: str, namespace: str, spec: dict) -> Manifest | None:
    """The broker's data claim, or None for an emptyDir (spec.mqtt.storage.size empty)."""
    storage = spec["mqtt"]["storage"]
    if not storage["size"]:
        return None
    claim: dict = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage["size"]}}}
    if storage["storageClass"]:
        claim["storageClassName"] = storage["storageClass"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta(name, f"{name}-hivemq-data", "hivemq", namespace),
        "spec": claim,
    }


def hivemq_config(name: str, namespace: str, spec: dict) -> Manifest:
    """The managed broker's config.xml: listening on every interface of the Pod, on the container port;
    with TLS (render.mqtt_tls) a TLS-only listener whose keystore password is a placeholder HiveMQ fills
    from its environment."""
    xml = hivemq_config_xml(mqtt_container_port(spec), "0.0.0.0", tls=mqtt_tls.broker_config_tls(spec))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, f"{name}-hivemq", "hivemq", namespace),
        "data": {CONFIG_KEY: xml},
    }


def hivemq_launcher_image(spec: dict) -> str:
    img = spec["image"]
    return spec["mqtt"].get("launcherImage") or f"{img['repository']}-hivemq:{img['tag']}"


def ingest_env(name: str, spec: dict) -> list[dict]:
    """The ingestion extension's settings (IngestSettings.java reads STREAMTRAIN_INGEST_<KEY>), the ingestion
    mapping as the bridge's variables."""
    s = settings_for(name, spec)
    values = {
        "KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "TOPIC_RAW": s.topic_raw,
        "TOPIC_DEADLETTER": s.topic_deadletter,
        "METRICS_HOST": "0.0.0.0",  # scraped through the Pod's IP
        "METRICS_PORT": str(METRICS_PORT),
    }
    return [{"name": f"STREAMTRAIN_INGEST_{k}", "value": v} for k, v in values.items()] + mapping_env(spec)


def hivemq(name: str, namespace: str, spec: dict) -> list[Manifest]:
    _, port = mqtt_endpoint(name, spec)
    extension = spec["mqtt"]["ingest"] == "extension"
    config = hivemq_config(name, namespace, spec)
    data = hivemq_data(name, namespace, spec)
    volumes: list[dict] = [
        {"name": v, "persistentVolumeClaim": {"claimName": data["metadata"]["name"]}}
        if v == "data" and data is not None
        else {"name": v, "emptyDir": {}}
        for v in WRITES
    ]
    volumes.append({"name": "config", "configMap": {"name": config["metadata"]["name"]}})
    mounts: list[dict] = [{"name": v, "mountPath": path} for v, path in WRITES.items()]
    if mqtt_credentials(spec):
        users_vol, users_mount = secret_file_volume("mqtt-users", mqtt_users_ref(name, spec), "users", MQTT_USERS_MOUNT)
        volumes.append(users_vol)
        mounts.append(users_mount)
        uid = UID
        image = {
            "image": hivemq_launcher_image(spec),
            "imagePullPolicy": spec["image"]["pullPolicy"],
            "args": [f"{MQTT_USERS_MOUNT}/users"],
        }
    elif extension:
        uid = UID
        image = {"image": hivemq_launcher_image(spec), "imagePullPolicy": spec["image"]["pullPolicy"]}
    else:
        uid = HIVEMQ_UID
        image = {"image": spec["mqtt"]["image"]}
    if uid == HIVEMQ_UID:
        mounts.append({"name": "config", "mountPath": STOCK_CONFIG, "subPath": CONFIG_KEY, "readOnly": True})
    else:
        mounts.append({"name": "config", "mountPath": LAUNCHER_CONFIG_DIR, "readOnly": True})
    tls_volumes, tls_mounts = mqtt_tls.broker_volumes(name, spec)
    volumes += tls_volumes
    mounts += tls_mounts
    ports = [{"name": MQTT_PORT_NAME, "containerPort": mqtt_container_port(spec), "protocol": "TCP"}]
    env: list[dict] = []
    if extension:
        env = ingest_env(name, spec)
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    elif uid == UID:
        # The launcher serves HiveMQ's own counters (messages it dropped: alert StreamTrainBrokerDroppedMessages).
        # With the extension, its port serves the ingestion's metrics instead.
        env = [{"name": "STREAMTRAIN_BROKER_METRICS_PORT", "value": str(METRICS_PORT)}]
        ports.append({"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"})
    env += mqtt_tls.broker_env(name, spec)  # the keystore password config.xml names, from the Secret
    if env:
        image["env"] = env
    pod = {
        "metadata": {
            "labels": labels(name, "hivemq"),
            # HiveMQ reads config.xml once, at start: a changed text must restart it.
            "annotations": {"streamtrain.io/config-hash": digest(config["data"])},
        },
        "spec": {
            "automountServiceAccountToken": False,  # HiveMQ never calls the Kubernetes API
            "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "fsGroup": uid},
            "containers": [
                {
                    "name": "hivemq",
                    **image,
                    "ports": ports,
                    "readinessProbe": {"tcpSocket": {"port": MQTT_PORT_NAME}, "periodSeconds": 5},
                    "livenessProbe": {
                        "tcpSocket": {"port": MQTT_PORT_NAME},
                        "initialDelaySeconds": 30,
                        "periodSeconds": 10,
                    },
                    "securityContext": image_security(uid),
                    "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                    "volumeMounts": mounts,
                }
            ],
            "volumes": volumes,
        },
    }
    broker = deployment(name, namespace, "hivemq", 1, pod)
    broker["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": ONE_AT_A_TIME}
    return [
        config,
        *([data] if data is not None else []),
        broker,
        service(
            name,
            namespace,
            "hivemq",
            [{"name": MQTT_PORT_NAME, "port": port, "targetPort": MQTT_PORT_NAME, "protocol": "TCP"}],
        ),
    ]
