"""Pure glue between one StreamingTraining object and its children: desired set (rendered, adopted),
what to prune, and which observed object belongs to which component. No I/O."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import kopf

from streamtrain.operator import render, validate
from streamtrain.operator.render import models

Manifest = dict[str, Any]


def key(m: Manifest) -> tuple[str, str]:
    return m["kind"], m["metadata"]["name"]


def defaulted_spec(body: Mapping[str, Any]) -> dict:
    """The spec with the CRD defaults applied again: the API server already did, but an object stored
    before a new default existed must render the same way."""
    return validate.defaulted(copy.deepcopy(dict(body)))["spec"]


def desired(body: Mapping[str, Any], existing: list[Manifest] | None = None) -> list[Manifest]:
    """Every child of ``body`` with owner references (so Kubernetes GC deletes them with the resource).
    ``existing``: the children it owns now (whether it ever asked for a pin decides an unpin Job)."""
    meta = body["metadata"]
    pinned_before = any(models.is_request(m) for m in existing or [])
    children = render.render(meta["name"], meta["namespace"], defaulted_spec(body), pinned_before)
    kopf.adopt(children, owner=body)  # type: ignore[arg-type]  # kopf types it as Body; a plain dict serves too
    return children


def stale(existing: list[Manifest], wanted: list[Manifest]) -> list[Manifest]:
    """Children that exist but are no longer desired (e.g. mqtt.mode -> external removes HiveMQ).

    Training Jobs are never pruned: each is one model version's training run, kept for its logs and
    removed with the resource by garbage collection. A pin Job is, once a newer request replaces it."""
    names = {key(m) for m in wanted}
    return [m for m in existing if key(m) not in names and (m["kind"] != "Job" or models.is_request(m))]


def observed_by_component(
    wanted: list[Manifest], existing: list[Manifest]
) -> dict[str, list[tuple[Manifest, Manifest | None]]]:
    found = {key(m): m for m in existing}
    out: dict[str, list[tuple[Manifest, Manifest | None]]] = {}
    for m in wanted:
        component = m["metadata"]["labels"]["app.kubernetes.io/component"]
        out.setdefault(component, []).append((m, found.get(key(m))))
    return out


def training_jobs(existing: list[Manifest]) -> list[Manifest]:
    return [
        m
        for m in existing
        if m["kind"] == "Job" and m["metadata"]["labels"].get("app.kubernetes.io/component") == "train"
    ]


def references_secret(m: Manifest, secret: str) -> bool:
    """Whether a child's Pods would read Secret ``secret`` (a volume or an environment variable)."""

    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("secretName") == secret:
                return True
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict) and ref.get("name") == secret:
                return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(m)
