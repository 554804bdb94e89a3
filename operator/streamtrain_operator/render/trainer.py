"""Training: one Job per recipe (it publishes one model version right away) and, with a schedule, a
CronJob that retrains on fresh data. With ``training.workers`` above 1 each is an indexed Job of
that many cooperating Pods, named by a headless Service (``training_workers``)."""

from __future__ import annotations

import copy

from streamtrain.operator.render.network import SCHEDULED_RUN, TRAINING_RUN_LABEL
from streamtrain.operator.render.objects import Manifest, digest, labels, meta, selector
from streamtrain.operator.render.programs import program_pod
from streamtrain.operator.training_workers import indexed_job_spec, workers_service


def training_hash(spec: dict) -> str:
    """Identity of a model version's recipe: a new one means a new training Job. The engine counts (its
    features may differ in the last digits); how many instances or training workers run it does not."""
    pre = {k: v for k, v in spec["preprocessing"].items() if k != "replicas"}
    return digest({"model": spec["model"], "preprocessing": pre, "image": spec["image"]})


def trainer(name: str, namespace: str, spec: dict) -> list[Manifest]:
    resources = spec["training"].get("resources") or {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "3Gi"},
    }
    job_spec: Manifest = {
        "backoffLimit": 8,  # the first run may start before enough features exist: retry with back-off
        "template": program_pod("train", name, spec, "train", resources=resources, restart="OnFailure"),
    }
    workers = spec["training"].get("workers", 1)
    if workers > 1:
        # A worker that fails restarts its Pod (OnFailure) and the cluster re-forms: TensorFlow's
        # collectives time out on the others, which then fail and restart too.
        job_spec = indexed_job_spec(job_spec, name, workers)
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(name, f"{name}-train-{training_hash(spec)}", "train", namespace),
        "spec": job_spec,
    }
    out = [job]
    if workers > 1:
        out.append(workers_service(name, namespace, labels(name, "train"), selector(name, "train")))
    if spec["training"]["schedule"]:
        # Its Jobs are named at run time: this label tells their Pods apart from the one-off Job's
        # (render.network opens the training workers' port between the Pods of one Job only).
        scheduled = copy.deepcopy(job_spec)
        scheduled["template"]["metadata"]["labels"][TRAINING_RUN_LABEL] = SCHEDULED_RUN
        out.append(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": meta(name, f"{name}-train", "train", namespace),
                "spec": {
                    "schedule": spec["training"]["schedule"],
                    "concurrencyPolicy": "Forbid",
                    "successfulJobsHistoryLimit": 3,
                    "failedJobsHistoryLimit": 3,
                    "jobTemplate": {"metadata": {"labels": labels(name, "train")}, "spec": scheduled},
                },
            }
        )
    return out
