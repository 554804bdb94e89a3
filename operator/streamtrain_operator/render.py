"""Pure rendering: one defaulted StreamingTraining spec in, the list of child manifests out.

No Kubernetes client here: every function takes data and returns data, so the whole pipeline's
shape is tested without a cluster. Names follow the data flow: hivemq -> bridge -> kafka ->
preprocess (or ksqldb) -> train -> score.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from streamtrain import access
from streamtrain.kafka import KafkaSecurity
from streamtrain.preprocessing import ksql
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.settings import CommonSettings
from streamtrain.topics import pipeline_topics

STRIMZI_API = "kafka.strimzi.io/v1"  # Strimzi 1.2.0, pinned in the chart
METRICS_PORT = 9400  # same port in every Pod; probes and the metrics Services use it
MQTT_PORT_NAME = "mqtt"
SPEC_MOUNT = "/etc/streamtrain"
KSQL_MOUNT = "/etc/ksqldb-queries"  # not /etc/ksqldb: the image writes its properties there at start
KSQL_CONFIG = "/etc/ksqldb"
KAFKA_USER_MOUNT = "/var/run/streamtrain/kafka-user"  # the password (a Secret key) as a file
KAFKA_CA_MOUNT = "/var/run/streamtrain/kafka-ca"  # the PEM CA of the brokers' certificates
MQTT_USERS_MOUNT = "/var/run/streamtrain/mqtt-users"  # the broker's users file (hashes), HiveMQ only
MQTT_PASSWORD_MOUNT = "/var/run/streamtrain/mqtt-password"  # the bridge's MQTT password
MQTT_DEVICES_MOUNT = "/var/run/streamtrain/mqtt-devices"  # the simulator's device_id:password lines
CREDENTIALS = "credentials"  # spec.mqtt.authentication: the broker checks every client against a users file
SCRAM = "scram-sha-512"  # spec.kafka.authentication; Strimzi's name of the mechanism
SASL_MECHANISM = "SCRAM-SHA-512"  # the same, as Kafka clients spell it
PLAIN_PORT, TLS_PORT = 9092, 9093
KSQL_IMAGE = "confluentinc/ksqldb-server:0.29.0"
UID = 10001  # the non-root user of images/Dockerfile

Manifest = dict[str, Any]


def labels(name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "streamtrain",
            "app.kubernetes.io/managed-by": "streamtrain-operator"}


def selector(name: str, component: str) -> dict[str, str]:
    """Only immutable identity: a Deployment's selector can never change."""
    return {"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": component}


def _meta(name: str, child: str, component: str, namespace: str) -> dict:
    return {"name": child, "namespace": namespace, "labels": labels(name, component)}


# --- connection points ---------------------------------------------------------------------------

def kafka_bootstrap(name: str, spec: dict) -> str:
    k = spec["kafka"]
    if k["mode"] == "external":
        return k["bootstrap"]
    return f"{name}-kafka-bootstrap:{TLS_PORT if kafka_authentication(spec) == SCRAM else PLAIN_PORT}"


def kafka_authentication(spec: dict) -> str:
    """scram-sha-512 or none. Unset means secure for a managed cluster (the operator creates the users)
    and none for an external one (whose credentials only the user can name)."""
    k = spec["kafka"]
    return k.get("authentication") or (SCRAM if k["mode"] == "managed" else "none")


def kafka_users_managed(spec: dict) -> bool:
    """Whether the operator creates a KafkaUser per program (managed cluster with SCRAM)."""
    return spec["kafka"]["mode"] == "managed" and kafka_authentication(spec) == SCRAM


def group_id(name: str, component: str) -> str:
    """Consumer group of a component (also the prefix of its transactional ids)."""
    return f"{name}-{component}"


def ksql_service_id(name: str) -> str:
    return f"{name}_"


def kafka_principals(name: str, spec: dict) -> list[tuple[str, str, str | None]]:
    """(component, access program, group) of every workload that talks to Kafka; the simulator speaks MQTT only."""
    out: list[tuple[str, str, str | None]] = [("bridge", "bridge", None)]
    if spec["preprocessing"]["engine"] == "ksqldb":
        out.append(("ksqldb", "ksqldb", ksql_service_id(name)))
    else:
        out.append(("preprocess", "preprocess", group_id(name, "preprocess")))
    out.append(("train", "train", None))
    out.append(("scorer", "score-streams" if spec["scorer"]["engine"] == "kafka-streams" else "score",
                group_id(name, "scorer")))
    return out


def kafka_user(name: str, component: str) -> str:
    """Name of a component's KafkaUser: also its SCRAM user name and the name of the Secret Strimzi writes."""
    return f"{name}-{component}-kafka"


def kafka_credentials(name: str, spec: dict, component: str) -> dict | None:
    """Where one component's Kafka credentials live: user name, password and CA as Secret keys ({name, key}),
    and for ksqlDB the JAAS line Strimzi writes next to the password. None without authentication."""
    k = spec["kafka"]
    if kafka_authentication(spec) != SCRAM or component not in {c for c, _, _ in kafka_principals(name, spec)}:
        return None
    if k["mode"] == "managed":
        user = kafka_user(name, component)
        return {"username": user, "password": {"name": user, "key": "password"},
                "jaas": {"name": user, "key": "sasl.jaas.config"},
                "ca": {"name": f"{name}-cluster-ca-cert", "key": "ca.crt"}}
    return {"username": k["username"], "password": dict(k["passwordSecretRef"]), "jaas": None,
            "ca": dict(k["caSecretRef"]) if "caSecretRef" in k else None}


def kafka_volumes(creds: dict | None, password_file: bool = True) -> tuple[list[dict], list[dict]]:
    """Read-only Secret volumes (only the one key each) and their mounts for a component's credentials.
    ``password_file=False``: only the CA (ksqlDB takes its password in the JAAS line instead)."""
    if creds is None:
        return [], []
    volumes, mounts = [], []
    for vol, ref, path, mount in (("kafka-user", creds["password"] if password_file else None, "password", KAFKA_USER_MOUNT),
                                  ("kafka-ca", creds["ca"], "ca.crt", KAFKA_CA_MOUNT)):
        if ref is None:
            continue
        volumes.append({"name": vol, "secret": {"secretName": ref["name"], "items": [{"key": ref["key"], "path": path}],
                                                "defaultMode": 0o440}})
        mounts.append({"name": vol, "mountPath": mount, "readOnly": True})
    return volumes, mounts


def _security(field: str, value: Any) -> dict:
    """One KafkaSecurity setting as an env var: the name comes from the settings class, never a literal."""
    if field not in KafkaSecurity.model_fields:
        raise KeyError(f"{field} is no KafkaSecurity field")
    return {"name": f"{KafkaSecurity.model_config['env_prefix']}{field.upper()}", "value": str(value)}


def kafka_security_env(creds: dict | None) -> list[dict]:
    """STREAMTRAIN_KAFKA_* of a StreamTrain program: SASL_SSL with the mounted password and CA files."""
    if creds is None:
        return []
    out = [_security("security_protocol", "SASL_SSL"), _security("sasl_mechanism", SASL_MECHANISM),
           _security("username", creds["username"]), _security("password_file", f"{KAFKA_USER_MOUNT}/password")]
    if creds["ca"] is not None:
        out.append(_security("ca_file", f"{KAFKA_CA_MOUNT}/ca.crt"))
    return out


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
        out.append(_ksql("sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required "
                                             f'username="{creds["username"]}" password="$(KAFKA_SASL_PASSWORD)";'))
    if creds["ca"] is not None:
        out += [_ksql("ssl.truststore.type", "PEM"), _ksql("ssl.truststore.location", f"{KAFKA_CA_MOUNT}/ca.crt")]
    return out


def mqtt_endpoint(name: str, spec: dict) -> tuple[str, int]:
    m = spec["mqtt"]
    return (m["host"], m["port"]) if m["mode"] == "external" else (f"{name}-hivemq", m["port"])


def mqtt_credentials(spec: dict) -> bool:
    """Whether the managed broker authenticates (spec.mqtt.authentication: credentials)."""
    return spec["mqtt"]["mode"] == "managed" and spec["mqtt"].get("authentication", "none") == CREDENTIALS


def secret_file_volume(volume: str, ref: dict, filename: str, mount: str) -> tuple[dict, dict]:
    """One key of a Secret as a read-only file ``mount/filename``: the volume and its mount."""
    return ({"name": volume, "secret": {"secretName": ref["name"], "items": [{"key": ref["key"], "path": filename}],
                                        "defaultMode": 0o440}},
            {"name": volume, "mountPath": mount, "readOnly": True})


def mqtt_volumes(program: str, spec: dict) -> tuple[list[dict], list[dict]]:
    """With broker credentials: the bridge's password and the simulator's device passwords, each Pod
    only its own Secret key, as files (never in the environment)."""
    if not mqtt_credentials(spec):
        return [], []
    if program == "bridge":
        v, m = secret_file_volume("mqtt-password", spec["mqtt"]["password"]["secretKeyRef"], "password",
                                  MQTT_PASSWORD_MOUNT)
    elif program == "simulate":
        v, m = secret_file_volume("mqtt-devices", spec["fleet"]["credentialsSecretRef"], "credentials",
                                  MQTT_DEVICES_MOUNT)
    else:
        return [], []
    return [v], [m]


def settings_for(name: str, spec: dict) -> CommonSettings:
    host, port = mqtt_endpoint(name, spec)
    return CommonSettings(kafka_bootstrap=kafka_bootstrap(name, spec), mqtt_host=host, mqtt_port=port)


def preprocess_spec(spec: dict) -> PreprocessSpec:
    """The preprocessing part as the programs read it; raises SpecError/ValidationError when it cannot run."""
    return PreprocessSpec.model_validate({k: v for k, v in spec["preprocessing"].items() if k != "engine"})


# --- environment: the one place spec fields become STREAMTRAIN_* settings -----------------------

def _v(key: str, value: Any) -> dict:
    if isinstance(value, bool):
        value = "true" if value else "false"
    return {"name": f"STREAMTRAIN_{key}", "value": str(value)}


def _secret(key: str, ref: dict) -> dict:
    r = ref["secretKeyRef"]
    return {"name": f"STREAMTRAIN_{key}", "valueFrom": {"secretKeyRef": {"name": r["name"], "key": r["key"]}}}


def env(program: str, name: str, spec: dict) -> list[dict]:
    """Environment of one program: common connection settings plus the program's own, same names as locally."""
    s = settings_for(name, spec)
    out = [_v("KAFKA_BOOTSTRAP", s.kafka_bootstrap), _v("LOG_FORMAT", "json"), _v("METRICS_PORT", METRICS_PORT)]
    if program in ("simulate", "bridge"):
        out += [_v("MQTT_HOST", s.mqtt_host), _v("MQTT_PORT", s.mqtt_port)]
        if mqtt_credentials(spec):
            # The bridge's identity: the name from its Secret, the password as a mounted file. The
            # simulator's devices are their own users (credentials file) and never see the bridge's.
            if program == "simulate":
                out.append(_v("CREDENTIALS_FILE", f"{MQTT_DEVICES_MOUNT}/credentials"))
            else:
                out += [_secret("MQTT_USERNAME", spec["mqtt"]["username"]),
                        _v("MQTT_PASSWORD_FILE", f"{MQTT_PASSWORD_MOUNT}/password")]
        else:
            for field, key in (("username", "MQTT_USERNAME"), ("password", "MQTT_PASSWORD")):
                if field in spec["mqtt"]:
                    out.append(_secret(key, spec["mqtt"][field]))
    if program == "simulate":
        f = spec["fleet"]
        out += [_v("DEVICES", f["devices"]), _v("RATE", f["rate"]), _v("ANOMALY_RATE", f["anomalyRate"]),
                _v("SEED", f["seed"])]
    elif program == "bridge":
        out += [_v("SHARE_GROUP", f"{name}-bridge")]
    elif program == "preprocess":
        out += [_v("SPEC_PATH", f"{SPEC_MOUNT}/preprocessing.yaml"), _v("GROUP_ID", group_id(name, "preprocess"))]
    elif program == "train":
        m = spec["model"]
        out += [_v("TRAIN_RECORDS", m["trainRecords"]), _v("FROM_END", True), _v("EPOCHS", m["epochs"]),
                _v("LAYERS", ",".join(str(w) for w in m["layers"])), _v("THRESHOLD_K", m["thresholdK"]),
                _v("FEATURES", ",".join(preprocess_spec(spec).feature_names))]
    elif program == "score":
        c = spec["scorer"]["challenger"]
        out += [_v("GROUP_ID", group_id(name, "scorer")), _v("ENGINE", spec["scorer"]["engine"]), _v("CHALLENGER", c["enabled"]),
                _v("PROMOTE_AFTER", c["promoteAfter"]), _v("PROMOTE_MIN_AGREEMENT", c["minAgreement"]),
                # Where a new scorer group starts; Pods restart on their own, so only the group's first start.
                _v("START_AT", spec["scorer"].get("startAt", "committed")), _v("START_AT_ONCE", True)]
    return out + kafka_security_env(kafka_credentials(name, spec, COMPONENT.get(program, program)))


#: Component (child name suffix, KafkaUser) of each program.
COMPONENT = {"simulate": "simulator", "bridge": "bridge", "preprocess": "preprocess", "train": "train", "score": "scorer"}


# --- pods ----------------------------------------------------------------------------------------

def _container_security() -> dict:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


#: The uid the HiveMQ CE image runs as, and every path it writes: persistence, logs, and the JVM's
#: temporary files (Netty unpacks its native transport there). Its extensions folder stays the
#: image's own (read-only): an emptyDir there would hide the bundled allow-all extension.
HIVEMQ_UID = 10000
HIVEMQ_WRITES = {"data": "/opt/hivemq/data", "log": "/opt/hivemq/log", "tmp": "/tmp"}
#: The ksqlDB image (uid 1000, appuser) writes its properties and log4j files into /etc/ksqldb at start
#: (from the KSQL_* environment) and Kafka Streams state under java.io.tmpdir.
KSQL_UID = 1000


def _image_security(uid: int) -> dict:
    """The hardening of our pods for third-party images that run as their own non-root uid."""
    return {**_container_security(), "runAsUser": uid, "runAsGroup": uid}


def _probe(path: str) -> dict:
    return {"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": 10, "failureThreshold": 3}


def program_pod(program: str, name: str, spec: dict, component: str, config_map: str | None = None,
                resources: dict | None = None, restart: str = "Always") -> dict:
    """Pod template of a StreamTrain program: non-root, read-only root, /tmp on an emptyDir, probes on /healthz, /readyz."""
    img = spec["image"]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
    if config_map:
        mounts.append({"name": "preprocessing", "mountPath": SPEC_MOUNT, "readOnly": True})
        volumes.append({"name": "preprocessing", "configMap": {"name": config_map}})
    kafka_vols, kafka_mounts = kafka_volumes(kafka_credentials(name, spec, COMPONENT[program]))
    volumes += kafka_vols
    mounts += kafka_mounts
    mqtt_vols, mqtt_mounts = mqtt_volumes(program, spec)
    volumes += mqtt_vols
    mounts += mqtt_mounts
    container = {
        "name": program, "image": f"{img['repository']}:{img['tag']}", "imagePullPolicy": img["pullPolicy"],
        "args": [program], "env": env(program, name, spec),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "securityContext": _container_security(), "volumeMounts": mounts,
        "resources": resources or {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    if restart == "Always":
        container["livenessProbe"] = _probe("/healthz")
        container["readinessProbe"] = _probe("/readyz")
    return {"metadata": {"labels": labels(name, component),
                         "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)}},
            "spec": {"restartPolicy": restart, "securityContext": {"runAsNonRoot": True, "fsGroup": UID},
                     "containers": [container], "volumes": volumes}}


def scorer_pod(name: str, spec: dict) -> dict:
    """The Python scorer, or the Kafka Streams scorer: its own image (a JVM whose entrypoint is the
    scorer), the same STREAMTRAIN_* environment, probes and hardening."""
    pod = program_pod("score", name, spec, "scorer")
    if spec["scorer"]["engine"] == "kafka-streams":
        img = spec["image"]
        c = pod["spec"]["containers"][0]
        c["image"] = spec["scorer"].get("streamsImage") or f"{img['repository']}-scorer-streams:{img['tag']}"
        del c["args"]
    return pod


def deployment(name: str, namespace: str, component: str, replicas: int, pod: dict) -> Manifest:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, f"{name}-{component}", component, namespace),
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector(name, component)}, "template": pod}}


def service(name: str, namespace: str, component: str, ports: list[dict]) -> Manifest:
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, f"{name}-{component}", component, namespace),
            "spec": {"selector": selector(name, component), "ports": ports}}


# --- children --------------------------------------------------------------------------------------

def strimzi(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """A KRaft Kafka cluster: one dual-role (controller+broker) node pool and one KafkaTopic per pipeline topic."""
    k = spec["kafka"]
    cluster_label = {"strimzi.io/cluster": name}
    rf = k["replicationFactor"]
    secure = kafka_users_managed(spec)
    # With SCRAM: one TLS listener where every client authenticates, and ACLs (simple authorization)
    # decide what each KafkaUser may do; no plain listener is left for an intruder.
    listener = ({"name": "tls", "port": TLS_PORT, "type": "internal", "tls": True, "authentication": {"type": SCRAM}}
                if secure else {"name": "plain", "port": PLAIN_PORT, "type": "internal", "tls": False})
    kafka = {
        "apiVersion": STRIMZI_API, "kind": "Kafka", "metadata": _meta(name, name, "kafka", namespace),
        "spec": {
            "kafka": {
                "version": k["version"],
                "listeners": [listener],
                "config": {"offsets.topic.replication.factor": rf, "transaction.state.log.replication.factor": rf,
                           "transaction.state.log.min.isr": min(rf, 2), "default.replication.factor": rf,
                           "min.insync.replicas": min(rf, 2)},
            },
            # The User Operator turns the KafkaUsers into SCRAM credentials (Secrets) and ACLs.
            "entityOperator": {"topicOperator": {}, "userOperator": {}} if secure else {"topicOperator": {}},
        },
    }
    if secure:
        kafka["spec"]["kafka"]["authorization"] = {"type": "simple"}
    pool = {
        "apiVersion": STRIMZI_API, "kind": "KafkaNodePool",
        "metadata": {**_meta(name, f"{name}-dual", "kafka", namespace),
                     "labels": {**labels(name, "kafka"), **cluster_label}},
        "spec": {"replicas": k["replicas"], "roles": ["controller", "broker"],
                 "storage": {"type": "jbod", "volumes": [{"id": 0, "type": "persistent-claim", "size": k["storage"],
                                                           "deleteClaim": True, "kraftMetadata": "shared"}]}},
    }
    return [kafka, pool, *kafka_topics(name, namespace, spec), *kafka_users(name, namespace, spec)]


def kafka_users(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """One KafkaUser per program that talks to Kafka, with exactly its ACLs (streamtrain.access). Strimzi
    answers with a Secret of the same name holding the generated password (keys password, sasl.jaas.config)."""
    if not kafka_users_managed(spec):
        return []
    s = settings_for(name, spec)
    windows = bool(spec["preprocessing"].get("windows"))
    out = []
    for component, program, group in kafka_principals(name, spec):
        out.append({
            "apiVersion": STRIMZI_API, "kind": "KafkaUser",
            "metadata": {**_meta(name, kafka_user(name, component), "kafka", namespace),
                         "labels": {**labels(name, "kafka"), "strimzi.io/cluster": name,
                                    "streamtrain.io/program": program}},
            "spec": {"authentication": {"type": SCRAM},
                     "authorization": {"type": "simple",
                                       "acls": access.strimzi_acls(program, s, group, windows=windows)}},
        })
    return out


def kafka_topics(name: str, namespace: str, spec: dict) -> list[Manifest]:
    k = spec["kafka"]
    out = []
    for t in pipeline_topics(settings_for(name, spec), k["partitions"], k["retentionHours"]):
        out.append({
            "apiVersion": STRIMZI_API, "kind": "KafkaTopic",
            "metadata": {**_meta(name, f"{name}-{t.name}".replace("_", "-"), "kafka", namespace),
                         "labels": {**labels(name, "kafka"), "strimzi.io/cluster": name}},
            "spec": {"topicName": t.name, "partitions": t.partitions, "replicas": k["replicationFactor"],
                     "config": dict(t.config)},
        })
    return out


#: StreamTrain's HiveMQ image (images/hivemq.Dockerfile, uid UID): the launcher writes persistence
#: to its data folder, logs to its log folder and the JVM's temporary files to /tmp.
LAUNCHER_WRITES = {"data": "/opt/hivemq/data", "log": "/opt/hivemq/log", "tmp": "/tmp"}


def hivemq_launcher_image(spec: dict) -> str:
    img = spec["image"]
    return spec["mqtt"].get("launcherImage") or f"{img['repository']}-hivemq:{img['tag']}"


def hivemq(name: str, namespace: str, spec: dict) -> list[Manifest]:
    if mqtt_credentials(spec):
        return hivemq_with_credentials(name, namespace, spec)
    port = spec["mqtt"]["port"]
    pod = {"metadata": {"labels": labels(name, "hivemq")}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": HIVEMQ_UID, "fsGroup": HIVEMQ_UID},
        "containers": [{
            "name": "hivemq", "image": spec["mqtt"]["image"],
            "ports": [{"name": MQTT_PORT_NAME, "containerPort": 1883, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": MQTT_PORT_NAME}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": MQTT_PORT_NAME}, "initialDelaySeconds": 30, "periodSeconds": 10},
            "securityContext": _image_security(HIVEMQ_UID),
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            "volumeMounts": [{"name": v, "mountPath": path} for v, path in HIVEMQ_WRITES.items()],
        }],
        "volumes": [{"name": v, "emptyDir": {}} for v in HIVEMQ_WRITES]}}
    return [deployment(name, namespace, "hivemq", 1, pod),
            service(name, namespace, "hivemq", [{"name": MQTT_PORT_NAME, "port": port, "targetPort": MQTT_PORT_NAME,
                                                 "protocol": "TCP"}])]


def hivemq_with_credentials(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """HiveMQ CE run by StreamTrain's launcher (images/hivemq.Dockerfile) with the users file of
    spec.mqtt.usersSecretRef mounted read-only and passed as the launcher's last argument: it refuses
    unknown users and wrong passwords and authorizes devices and the bridge (README "Who may connect").
    The launcher reads the file at start: after changing the Secret, restart the Deployment."""
    port = spec["mqtt"]["port"]
    img = spec["image"]
    users_vol, users_mount = secret_file_volume("mqtt-users", spec["mqtt"]["usersSecretRef"], "users",
                                                MQTT_USERS_MOUNT)
    pod = {"metadata": {"labels": labels(name, "hivemq")}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "fsGroup": UID},
        "containers": [{
            "name": "hivemq", "image": hivemq_launcher_image(spec), "imagePullPolicy": img["pullPolicy"],
            "args": [f"{MQTT_USERS_MOUNT}/users"],
            "ports": [{"name": MQTT_PORT_NAME, "containerPort": 1883, "protocol": "TCP"}],
            "readinessProbe": {"tcpSocket": {"port": MQTT_PORT_NAME}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": MQTT_PORT_NAME}, "initialDelaySeconds": 30, "periodSeconds": 10},
            "securityContext": _container_security(),
            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
            "volumeMounts": [*({"name": v, "mountPath": path} for v, path in LAUNCHER_WRITES.items()), users_mount],
        }],
        "volumes": [*({"name": v, "emptyDir": {}} for v in LAUNCHER_WRITES), users_vol]}}
    return [deployment(name, namespace, "hivemq", 1, pod),
            service(name, namespace, "hivemq", [{"name": MQTT_PORT_NAME, "port": port, "targetPort": MQTT_PORT_NAME,
                                                 "protocol": "TCP"}])]


def preprocessing(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """Either the embedded engine (`streamtrain preprocess`) or ksqlDB running the same spec rendered to SQL."""
    pre = preprocess_spec(spec)
    if spec["preprocessing"]["engine"] == "ksqldb":
        statements = ksql.render(pre, settings_for(name, spec))
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, f"{name}-ksqldb-queries", "ksqldb", namespace),
              "data": {"queries.sql": "\n\n".join(statements) + "\n"}}
        creds = kafka_credentials(name, spec, "ksqldb")
        kafka_vols, kafka_mounts = kafka_volumes(creds, password_file=False)
        pod = {"metadata": {"labels": labels(name, "ksqldb"), "annotations": {"streamtrain.io/queries-hash": digest(cm["data"])}},
               "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": KSQL_UID, "fsGroup": KSQL_UID},
                        "containers": [{
                            "name": "ksqldb", "image": KSQL_IMAGE,
                            "env": [_ksql("bootstrap.servers", kafka_bootstrap(name, spec)),
                                    _ksql("ksql.service.id", ksql_service_id(name)),
                                    _ksql("ksql.queries.file", f"{KSQL_MOUNT}/queries.sql"),
                                    _ksql("listeners", "http://0.0.0.0:8088"), *ksql_security_env(creds)],
                            "ports": [{"name": "http", "containerPort": 8088, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 10},
                            "securityContext": _image_security(KSQL_UID),
                            "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                            "volumeMounts": [{"name": "queries", "mountPath": KSQL_MOUNT, "readOnly": True},
                                             {"name": "config", "mountPath": KSQL_CONFIG},
                                             {"name": "tmp", "mountPath": "/tmp"}, *kafka_mounts]}],
                        # The generated properties may hold the JAAS line: memory, never the node's disk.
                        "volumes": [{"name": "queries", "configMap": {"name": cm["metadata"]["name"]}},
                                    {"name": "config", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
                                    {"name": "tmp", "emptyDir": {}}, *kafka_vols]}}
        return [cm, deployment(name, namespace, "ksqldb", 1, pod)]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, f"{name}-preprocessing", "preprocess", namespace),
          "data": {"preprocessing.yaml": yaml.safe_dump(pre.model_dump(mode="json"), sort_keys=False)}}
    pod = program_pod("preprocess", name, spec, "preprocess", config_map=cm["metadata"]["name"])
    # A changed spec must restart the preprocessors: the hash in the template rolls the Deployment.
    pod["metadata"]["annotations"]["streamtrain.io/preprocessing-hash"] = digest(cm["data"])
    return [cm, deployment(name, namespace, "preprocess", 1, pod)]


def without_nulls(data: Any) -> Any:
    """A null field and an absent one are the same spec: a JSON merge patch turns the first into the
    second on the API server, which must not change a recipe's identity."""
    if isinstance(data, dict):
        return {k: without_nulls(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_nulls(v) for v in data]
    return data


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(without_nulls(data), sort_keys=True).encode()).hexdigest()[:10]


def training_hash(spec: dict) -> str:
    """Identity of a model version's recipe: a new one means a new training Job."""
    return digest({"model": spec["model"], "preprocessing": spec["preprocessing"], "image": spec["image"]})


def trainer(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """One Job per recipe (publishes one model version right away) and, with a schedule, a CronJob for retraining."""
    resources = spec["training"].get("resources") or {"requests": {"cpu": "500m", "memory": "1Gi"},
                                                      "limits": {"memory": "3Gi"}}
    job_spec = {"backoffLimit": 8,  # the first run may start before enough features exist: retry with back-off
                "template": program_pod("train", name, spec, "train", resources=resources, restart="OnFailure")}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {**_meta(name, f"{name}-train-{training_hash(spec)}", "train", namespace)},
           "spec": job_spec}
    out = [job]
    if spec["training"]["schedule"]:
        out.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": _meta(name, f"{name}-train", "train", namespace),
                    "spec": {"schedule": spec["training"]["schedule"], "concurrencyPolicy": "Forbid",
                             "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                             "jobTemplate": {"metadata": {"labels": labels(name, "train")}, "spec": job_spec}}})
    return out


def render(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """Every child of one StreamingTraining, in data-flow order. ``spec`` must already carry the CRD defaults."""
    children: list[Manifest] = []
    if spec["mqtt"]["mode"] == "managed":
        children += hivemq(name, namespace, spec)
    if spec["fleet"]["simulated"]:
        children.append(deployment(name, namespace, "simulator", 1, program_pod("simulate", name, spec, "simulator")))
    children.append(deployment(name, namespace, "bridge", 1, program_pod("bridge", name, spec, "bridge")))
    if spec["kafka"]["mode"] == "managed":
        children += strimzi(name, namespace, spec)
    children += preprocessing(name, namespace, spec)
    children += trainer(name, namespace, spec)
    children.append(deployment(name, namespace, "scorer", spec["scorer"]["replicas"], scorer_pod(name, spec)))
    children += metrics_services(name, namespace)
    return children


def metrics_services(name: str, namespace: str) -> list[Manifest]:
    """/metrics of every program of this pipeline (the chart's ServiceMonitor selects it), and of the
    scorers alone, where the operator reads the model version and anomaly rate for the status."""
    port = [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}]
    every = service(name, namespace, "metrics", port)
    every["spec"]["selector"] = {"app.kubernetes.io/name": "streamtrain", "app.kubernetes.io/instance": name}
    every["spec"]["clusterIP"] = "None"  # headless: Prometheus scrapes each Pod, not a random one
    return [every, service(name, namespace, "scorer", port)]
