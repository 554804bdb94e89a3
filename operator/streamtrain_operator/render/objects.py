"""What every child shares: labels and selectors, metadata, the Deployment and Service shapes, the
Pod hardening and the content hashes that roll Pods or name Jobs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

Manifest = dict[str, Any]

METRICS_PORT = 9400  # same port in every Pod; probes and the metrics Services use it
UID = 10001  # the non-root user of images/Dockerfile


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "streamtrain",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "streamtrain",
        "app.kubernetes.io/managed-by": "streamtrain-operator",
    }


def selector(name: str, component: str) -> dict[str, str]:
    """Only immutable identity: a Deployment's selector can never change."""
    return {
        "app.kubernetes.io/name": "streamtrain",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
    }


def meta(name: str, child: str, component: str, namespace: str) -> dict:
    return {"name": child, "namespace": namespace, "labels": labels(name, component)}


def container_security() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def image_security(uid: int) -> dict:
    """The hardening of our pods for third-party images that run as their own non-root uid."""
    return {**container_security(), "runAsUser": uid, "runAsGroup": uid}


#: Where replicas of one Deployment should not pile up: other zones first, then other nodes. Soft
#: (ScheduleAnyway): a one-node cluster still runs everything; pod-template-hash spreads each rollout's
#: own Pods rather than counting the old ones still terminating.
SPREAD_KEYS = ("topology.kubernetes.io/zone", "kubernetes.io/hostname")


def topology_spread(name: str, component: str) -> list[dict]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(name, component)},
            "matchLabelKeys": ["pod-template-hash"],
        }
        for key in SPREAD_KEYS
    ]


def deployment(name: str, namespace: str, component: str, replicas: int | None, pod: dict) -> Manifest:
    """A Deployment whose Pods spread over zones and nodes. ``replicas=None``: an autoscaler owns the count."""
    pod = {**pod, "spec": {**pod["spec"], "topologySpreadConstraints": topology_spread(name, component)}}
    spec = {"replicas": replicas, "selector": {"matchLabels": selector(name, component)}, "template": pod}
    if replicas is None:
        del spec["replicas"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(name, f"{name}-{component}", component, namespace),
        "spec": spec,
    }


def service(name: str, namespace: str, component: str, ports: list[dict]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(name, f"{name}-{component}", component, namespace),
        "spec": {"selector": selector(name, component), "ports": ports},
    }


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
