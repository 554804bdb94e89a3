"""The training Job for several workers: an indexed Job plus the headless Service that names its Pods.

``streamtrain train`` runs as one worker of a ``MultiWorkerMirroredStrategy`` cluster when it
finds ``STREAMTRAIN_WORKER_HOSTS`` (every worker's host:port, in index order) and Kubernetes'
``JOB_COMPLETION_INDEX`` (this Pod's index): worker i reads its own partitions of the range, and
worker 0 publishes the version. An indexed Job gives each Pod a stable hostname
``<job>-<index>``; with ``subdomain`` set to a headless Service, ``<job>-<index>.<service>``
resolves to it, so the hosts are known when the Job is rendered.

Every worker must train on the same records, so the range's end is pinned at render time
(``STREAMTRAIN_UNTIL_MS``: the operator passes the time it creates the Job).

Pure functions: they take the single-worker Job that ``render.trainer`` renders and return new
manifests; nothing here talks to the API server.
"""

from __future__ import annotations

import copy
from typing import Any

Manifest = dict[str, Any]

#: The port each worker's TensorFlow gRPC server listens on.
WORKER_PORT = 2222


def worker_hosts(job_name: str, service_name: str, workers: int) -> list[str]:
    return [f"{job_name}-{i}.{service_name}:{WORKER_PORT}" for i in range(workers)]


def indexed_training(job: Manifest, workers: int, until_ms: int) -> list[Manifest]:
    """[headless Service, indexed Job] running ``job``'s trainer as ``workers`` cooperating Pods."""
    if workers < 2:
        raise ValueError("an indexed training Job needs at least 2 workers; render the plain Job for one")
    meta = job["metadata"]
    service_name = f"{meta['name']}-workers"[:63]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name, "namespace": meta["namespace"], "labels": dict(meta["labels"])},
        "spec": {
            "clusterIP": "None",  # headless: one DNS name per Pod
            "publishNotReadyAddresses": True,  # workers dial each other before any is Ready
            "selector": {"batch.kubernetes.io/job-name": meta["name"]},
            "ports": [{"name": "tf-worker", "port": WORKER_PORT, "targetPort": WORKER_PORT, "protocol": "TCP"}],
        },
    }
    indexed = copy.deepcopy(job)
    spec = indexed["spec"]
    spec.update({"completionMode": "Indexed", "completions": workers, "parallelism": workers})
    pod = spec["template"]["spec"]
    pod["subdomain"] = service_name
    container = pod["containers"][0]  # the trainer (program_pod renders one container)
    env = [e for e in container.get("env", []) if e["name"] not in ("STREAMTRAIN_WORKER_HOSTS", "STREAMTRAIN_UNTIL_MS")]
    env += [
        {"name": "STREAMTRAIN_WORKER_HOSTS", "value": ",".join(worker_hosts(meta["name"], service_name, workers))},
        {"name": "STREAMTRAIN_UNTIL_MS", "value": str(int(until_ms))},
    ]
    container["env"] = env
    container["ports"] = [p for p in container.get("ports", []) if p.get("containerPort") != WORKER_PORT] + [
        {"name": "tf-worker", "containerPort": WORKER_PORT, "protocol": "TCP"}
    ]
    return [service, indexed]
