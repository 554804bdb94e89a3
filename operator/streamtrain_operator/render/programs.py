"""StreamTrain's own programs as Pods: the one place spec fields become STREAMTRAIN_* settings (the
same names as locally), the hardened Pod template, and the Deployments of the simulator, the bridge,
the embedded preprocessor and the scorers."""

from __future__ import annotations

from typing import Any

import yaml

from streamtrain.operator.ingest import ingest_env
from streamtrain.operator.model_settings import model_env
from streamtrain.operator.render import mqtt_tls, signing
from streamtrain.operator.render.connections import (
    MQTT_DEVICES_MOUNT,
    MQTT_PASSWORD_MOUNT,
    group_id,
    kafka_credentials,
    kafka_security_env,
    kafka_volumes,
    mqtt_bridge_refs,
    mqtt_credentials,
    mqtt_volumes,
    preprocess_spec,
    settings_for,
)
from streamtrain.operator.render.objects import (
    METRICS_PORT,
    UID,
    Manifest,
    container_security,
    deployment,
    digest,
    labels,
    meta,
)

SPEC_MOUNT = "/etc/streamtrain"

#: Component (child name suffix, KafkaUser) of each program.
COMPONENT = {
    "simulate": "simulator",
    "bridge": "bridge",
    "preprocess": "preprocess",
    "train": "train",
    "score": "scorer",
    # `streamtrain models pin/unpin` (render.models) writes the models topic: only the trainer may.
    "models": "train",
}


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
                out += [
                    _secret("MQTT_USERNAME", {"secretKeyRef": mqtt_bridge_refs(name, spec)[0]}),
                    _v("MQTT_PASSWORD_FILE", f"{MQTT_PASSWORD_MOUNT}/password"),
                ]
        else:
            for field, key in (("username", "MQTT_USERNAME"), ("password", "MQTT_PASSWORD")):
                if field in spec["mqtt"]:
                    out.append(_secret(key, spec["mqtt"][field]))
    if program == "simulate":
        f = spec["fleet"]
        out += [
            _v("DEVICES", f["devices"]),
            _v("RATE", f["rate"]),
            _v("ANOMALY_RATE", f["anomalyRate"]),
            _v("SEED", f["seed"]),
        ]
    elif program == "bridge":
        out += [_v("SHARE_GROUP", f"{name}-bridge"), *ingest_env(spec)]
    elif program == "preprocess":
        out += [_v("SPEC_PATH", f"{SPEC_MOUNT}/preprocessing.yaml"), _v("GROUP_ID", group_id(name, "preprocess"))]
    elif program == "train":
        # Every model setting of spec.model, named as `streamtrain train` reads it (model_settings).
        out += [*model_env(spec["model"]), _v("FEATURES", ",".join(preprocess_spec(spec).feature_names))]
    elif program == "score":
        c = spec["scorer"]["challenger"]
        out += [
            _v("GROUP_ID", group_id(name, "scorer")),
            _v("ENGINE", spec["scorer"]["engine"]),
            _v("CHALLENGER", c["enabled"]),
            _v("PROMOTE_AFTER", c["promoteAfter"]),
            _v("PROMOTE_MIN_AGREEMENT", c["minAgreement"]),
            # Where a new scorer group starts; Pods restart on their own, so only the group's first start.
            _v("START_AT", spec["scorer"].get("startAt", "committed")),
            _v("START_AT_ONCE", True),
        ]
    out += mqtt_tls.client_env(program, name, spec)
    out += signing.env(program, name, spec)
    return out + kafka_security_env(kafka_credentials(name, spec, COMPONENT.get(program, program)))


def _probe(path: str) -> dict:
    return {"httpGet": {"path": path, "port": "metrics"}, "periodSeconds": 10, "failureThreshold": 3}


#: Programs that import no TensorFlow, ONNX or matplotlib: they run the image built with the base
#: install only (images/Dockerfile with EXTRAS empty), <repository>-lite, a fraction of the full one.
LITE_PROGRAMS = frozenset({"simulate", "bridge", "preprocess"})


def program_image(program: str, img: dict) -> str:
    """The image a program runs: spec.image.lite or <repository>-lite:<tag> for LITE_PROGRAMS,
    spec.image.full or <repository>:<tag> (with TensorFlow) for the trainer and the Python scorer."""
    if program in LITE_PROGRAMS:
        return img.get("lite") or f"{img['repository']}-lite:{img['tag']}"
    return img.get("full") or f"{img['repository']}:{img['tag']}"


def program_pod(
    program: str,
    name: str,
    spec: dict,
    component: str,
    config_map: str | None = None,
    resources: dict | None = None,
    restart: str = "Always",
) -> dict:
    """Pod template of a StreamTrain program: non-root, read-only root, /tmp on an emptyDir, probes on /healthz, /readyz."""
    img = spec["image"]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict] = [{"name": "tmp", "emptyDir": {}}]
    if config_map:
        mounts.append({"name": "preprocessing", "mountPath": SPEC_MOUNT, "readOnly": True})
        volumes.append({"name": "preprocessing", "configMap": {"name": config_map}})
    kafka_vols, kafka_mounts = kafka_volumes(kafka_credentials(name, spec, COMPONENT[program]))
    volumes += kafka_vols
    mounts += kafka_mounts
    mqtt_vols, mqtt_mounts = mqtt_volumes(program, name, spec)
    volumes += mqtt_vols
    mounts += mqtt_mounts
    tls_vols, tls_mounts = mqtt_tls.client_volumes(program, name, spec)
    volumes += tls_vols
    mounts += tls_mounts
    signing_vols, signing_mounts = signing.volumes(program, name, spec)
    volumes += signing_vols
    mounts += signing_mounts
    container = {
        "name": program,
        "image": program_image(program, img),
        "imagePullPolicy": img["pullPolicy"],
        "args": [program],
        "env": env(program, name, spec),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "securityContext": container_security(),
        "volumeMounts": mounts,
        "resources": resources or {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    }
    if restart == "Always":
        container["livenessProbe"] = _probe("/healthz")
        container["readinessProbe"] = _probe("/readyz")
    return {
        "metadata": {
            "labels": labels(name, component),
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT)},
        },
        "spec": {
            "restartPolicy": restart,
            # No program calls the Kubernetes API: a token in the Pod would only serve an intruder.
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "fsGroup": UID},
            "containers": [container],
            "volumes": volumes,
        },
    }


def simulator(name: str, namespace: str, spec: dict) -> list[Manifest]:
    return [deployment(name, namespace, "simulator", 1, program_pod("simulate", name, spec, "simulator"))]


def bridge(name: str, namespace: str, spec: dict) -> list[Manifest]:
    return [deployment(name, namespace, "bridge", 1, program_pod("bridge", name, spec, "bridge"))]


def preprocessor(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """The embedded engine (`streamtrain preprocess`) with the spec as a mounted file."""
    pre = preprocess_spec(spec)
    cm: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(name, f"{name}-preprocessing", "preprocess", namespace),
        "data": {"preprocessing.yaml": yaml.safe_dump(pre.model_dump(mode="json"), sort_keys=False)},
    }
    pod = program_pod("preprocess", name, spec, "preprocess", config_map=cm["metadata"]["name"])
    # A changed spec must restart the preprocessors: the hash in the template rolls the Deployment.
    pod["metadata"]["annotations"]["streamtrain.io/preprocessing-hash"] = digest(cm["data"])
    return [cm, deployment(name, namespace, "preprocess", spec["preprocessing"]["replicas"], pod)]


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


def scorer(name: str, namespace: str, spec: dict) -> list[Manifest]:
    """The scorers' Deployment. Autoscaled, it names no replica count: KEDA's HorizontalPodAutoscaler owns
    it, and a count in every reconcile's patch would fight it (a new Deployment then starts with one)."""
    s = spec["scorer"]
    return [
        deployment(
            name, namespace, "scorer", None if s["autoscaling"]["enabled"] else s["replicas"], scorer_pod(name, spec)
        )
    ]
