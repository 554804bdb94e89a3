"""Training by several workers: indexed Jobs plus the headless Service that names their Pods.

``streamtrain train`` runs as one worker of a ``MultiWorkerMirroredStrategy`` cluster when it
finds ``STREAMTRAIN_WORKER_HOSTS`` (every worker's host:port, in index order) and Kubernetes'
``JOB_COMPLETION_INDEX`` (this Pod's index): worker i reads its own partitions of the range, and
worker 0 resolves the range, sends it to the others and publishes the version.

An indexed Job gives each Pod the hostname ``<job>-<index>``; with ``subdomain`` set to a headless
Service that selects it, ``<job>-<index>.<service>`` resolves to it. The Job's name is read from its
own label (downward API) and put into the hosts by Kubernetes' ``$(VAR)`` expansion, so the same
Pod template serves the one-off Job and the Jobs a CronJob names at run time, and the rendering
never changes between reconciles (a Job's template is immutable).

Pure functions over the manifests ``render.trainer`` makes; nothing here talks to the API server.
"""

from __future__ import annotations

import copy
from typing import Any

Manifest = dict[str, Any]

#: The port each worker's TensorFlow gRPC server listens on.
WORKER_PORT = 2222
#: The variable the Job's name is read into (from the label Kubernetes puts on every Job's Pods).
JOB_NAME_VAR = "STREAMTRAIN_TRAINING_JOB"


def service_name(instance: str) -> str:
    return f"{instance}-train-workers"[:63]


def worker_hosts(job_name: str, service: str, workers: int) -> list[str]:
    return [f"{job_name}-{i}.{service}:{WORKER_PORT}" for i in range(workers)]


def workers_service(instance: str, namespace: str, labels: dict[str, str], selector: dict[str, str]) -> Manifest:
    """The headless Service every training Pod of ``instance`` is a subdomain of."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(instance), "namespace": namespace, "labels": dict(labels)},
        "spec": {
            "clusterIP": "None",  # headless: one DNS name per Pod
            "publishNotReadyAddresses": True,  # workers dial each other before any is Ready
            "selector": dict(selector),
            "ports": [{"name": "tf-worker", "port": WORKER_PORT, "targetPort": WORKER_PORT, "protocol": "TCP"}],
        },
    }


def indexed_job_spec(job_spec: Manifest, instance: str, workers: int) -> Manifest:
    """``job_spec`` (a Job's spec, or a CronJob's jobTemplate spec) run as ``workers`` cooperating Pods."""
    if workers < 2:
        raise ValueError("an indexed training Job needs at least 2 workers; render the plain Job for one")
    spec = copy.deepcopy(job_spec)
    spec.update({"completionMode": "Indexed", "completions": workers, "parallelism": workers})
    pod = spec["template"]["spec"]
    pod["subdomain"] = service_name(instance)
    container = pod["containers"][0]  # the trainer (program_pod renders one container)
    env = [e for e in container.get("env", []) if e["name"] not in (JOB_NAME_VAR, "STREAMTRAIN_WORKER_HOSTS")]
    env += [
        {
            "name": JOB_NAME_VAR,
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
        },
        {
            "name": "STREAMTRAIN_WORKER_HOSTS",
            "value": ",".join(worker_hosts(f"$({JOB_NAME_VAR})", service_name(instance), workers)),
        },
    ]
    container["env"] = env
    container["ports"] = [p for p in container.get("ports", []) if p.get("containerPort") != WORKER_PORT] + [
        {"name": "tf-worker", "containerPort": WORKER_PORT, "protocol": "TCP"}
    ]
    return spec


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion of an env value (what the kubelet does), for tests and tools."""
    for name, v in env.items():
        value = value.replace(f"$({name})", v)
    return value
