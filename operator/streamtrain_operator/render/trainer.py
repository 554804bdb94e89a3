"""Training: one Job per recipe (it publishes one model version right away) and, with a schedule, a
CronJob that retrains on fresh data."""

from __future__ import annotations

from streamtrain.operator.render.objects import Manifest, digest, labels, meta
from streamtrain.operator.render.programs import program_pod


def training_hash(spec: dict) -> str:
    """Identity of a model version's recipe: a new one means a new training Job. The engine counts (its
    features may differ in the last digits); how many instances run it does not."""
    pre = {k: v for k, v in spec["preprocessing"].items() if k != "replicas"}
    return digest({"model": spec["model"], "preprocessing": pre, "image": spec["image"]})


def trainer(name: str, namespace: str, spec: dict) -> list[Manifest]:
    resources = spec["training"].get("resources") or {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "3Gi"},
    }
    job_spec = {
        "backoffLimit": 8,  # the first run may start before enough features exist: retry with back-off
        "template": program_pod("train", name, spec, "train", resources=resources, restart="OnFailure"),
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta(name, f"{name}-train-{training_hash(spec)}", "train", namespace),
        "spec": job_spec,
    }
    out = [job]
    if spec["training"]["schedule"]:
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
                    "jobTemplate": {"metadata": {"labels": labels(name, "train")}, "spec": job_spec},
                },
            }
        )
    return out
