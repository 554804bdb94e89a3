"""Pure rendering: one defaulted StreamingTraining spec in, the list of child manifests out.

No Kubernetes client here: every function takes data and returns data, so the whole pipeline's
shape is tested without a cluster. One module per kind of child, named after the data flow:
``hivemq`` -> ``programs`` (simulator, bridge) -> ``strimzi`` -> ``programs`` (preprocessor) or
``ksqldb`` -> ``trainer`` -> ``programs`` (scorers) and ``autoscaling`` -> ``models`` (a pin Job)
-> ``monitoring``;
``availability`` gives every Deployment its PodDisruptionBudget, ``network`` says who may connect to
which Pod, ``connections`` says how the children
reach the brokers and ``objects`` holds the shapes they share (with the topology spread of every Pod).
"""

from __future__ import annotations

from streamtrain.operator.render import (
    autoscaling,
    availability,
    hivemq,
    ksqldb,
    models,
    monitoring,
    network,
    programs,
    strimzi,
    trainer,
)
from streamtrain.operator.render.objects import Manifest


def render(name: str, namespace: str, spec: dict, pinned_before: bool = False) -> list[Manifest]:
    """Every child of one StreamingTraining, in data-flow order. ``spec`` must already carry the CRD defaults;
    ``pinned_before``: the resource owns a pin Job (see ``models``)."""
    children: list[Manifest] = []
    if spec["mqtt"]["mode"] == "managed":
        children += hivemq.hivemq(name, namespace, spec)
    if spec["fleet"]["simulated"]:
        children += programs.simulator(name, namespace, spec)
    if spec["mqtt"]["ingest"] == "bridge":  # else the managed broker writes to Kafka itself (hivemq)
        children += programs.bridge(name, namespace, spec)
    if spec["kafka"]["mode"] == "managed":
        children += strimzi.strimzi(name, namespace, spec)
    if spec["preprocessing"]["engine"] == "ksqldb":
        children += ksqldb.ksqldb(name, namespace, spec)
    else:
        children += programs.preprocessor(name, namespace, spec)
    children += trainer.trainer(name, namespace, spec)
    children += programs.scorer(name, namespace, spec)
    children += autoscaling.scorer_autoscaling(name, namespace, spec)
    children += models.pin_requests(name, namespace, spec, pinned_before)
    children += monitoring.metrics_services(name, namespace)
    children = availability.with_disruption_budgets(children)
    return children + network.network_policies(name, namespace, spec, children)
