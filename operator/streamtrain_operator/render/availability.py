"""Voluntary disruptions (node drains, cluster upgrades): one PodDisruptionBudget per Deployment, so a
drain takes at most one Pod of a component at a time. Kafka's brokers get theirs from Strimzi."""

from __future__ import annotations

from streamtrain.operator.render.objects import Manifest


def disruption_budget(deployment: Manifest) -> Manifest:
    """maxUnavailable 1, never minAvailable: a one-replica component (HiveMQ, the bridge) can still be
    drained, and the scorers' group rebalances over one leaving member at a time. A Pod that is not
    ready anyway may always be evicted (unhealthyPodEvictionPolicy), so a crash-looping Pod never blocks
    a drain."""
    meta = deployment["metadata"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta["labels"])},
        "spec": {
            "maxUnavailable": 1,
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
            "selector": {"matchLabels": dict(deployment["spec"]["selector"]["matchLabels"])},
        },
    }


def with_disruption_budgets(children: list[Manifest]) -> list[Manifest]:
    """The children with each Deployment's budget right after it (data-flow order is kept)."""
    out: list[Manifest] = []
    for child in children:
        out.append(child)
        if child["kind"] == "Deployment":
            out.append(disruption_budget(child))
    return out
