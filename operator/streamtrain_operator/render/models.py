"""Which version the scorers serve, from the resource: ``scorer.pinnedVersion`` becomes a Job that runs
``streamtrain models pin V`` once, under the trainer's Kafka identity (the only one that may write the
models topic); the scorers read the pin record there and switch between two batches, without a restart.

Removing the field asks for ``streamtrain models unpin``: a pin Job this resource owns is what tells
that a pin was asked for (rendering stays a function of the spec and of that one fact). Each request
is its own Job, named after it, and the Job of an older request is pruned (a training Job never is)."""

from __future__ import annotations

from streamtrain.operator.render.objects import Manifest, meta
from streamtrain.operator.render.programs import program_pod

#: Component label of the pin and unpin Jobs (and their Pods); their condition is ``PinApplied``.
COMPONENT = "models"
#: Tries of one request: a version that is not on the models topic yet fails each (exit 1), and the Job
#: ends Failed after about five minutes of back-off; a new spec makes a new Job.
BACKOFF_LIMIT = 5


def job_name(name: str, pinned: int | None) -> str:
    return f"{name}-pin-{pinned}" if pinned is not None else f"{name}-unpin"


def pin_requests(name: str, namespace: str, spec: dict, pinned_before: bool) -> list[Manifest]:
    """The Job for ``scorer.pinnedVersion``; without one, an unpin Job if ``pinned_before`` (this resource
    owns a pin or unpin Job: a pin was asked for at some point), else nothing."""
    version = spec["scorer"].get("pinnedVersion")
    if version is None and not pinned_before:
        return []
    args = ["models", "pin", str(version)] if version is not None else ["models", "unpin"]
    pod = program_pod("models", name, spec, COMPONENT, restart="OnFailure")
    container = pod["spec"]["containers"][0]
    container["args"] = args
    container["resources"] = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": meta(name, job_name(name, version), COMPONENT, namespace),
            "spec": {"backoffLimit": BACKOFF_LIMIT, "template": pod},
        }
    ]


def is_request(m: Manifest) -> bool:
    """Whether an observed child is a pin or unpin Job."""
    return m["kind"] == "Job" and m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == COMPONENT
