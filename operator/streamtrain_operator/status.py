"""Pure status logic: observed children in, Kubernetes-style conditions and a phase out.

kopf has no conditions of its own; these functions decide them so the handlers only read and write.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from typing import Any

Manifest = dict[str, Any]
log = logging.getLogger(__name__)

#: Condition type of each child component (one per component, not per object).
CONDITION = {
    "hivemq": "HivemqReady",
    "simulator": "SimulatorReady",
    "bridge": "BridgeReady",
    "kafka": "KafkaReady",
    "preprocess": "PreprocessingReady",
    "ksqldb": "PreprocessingReady",
    "train": "TrainingReady",
    "scorer": "ScorerReady",
    "models": "PinApplied",  # the Job of scorer.pinnedVersion (or of its removal) has run
}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _strimzi_ready(obj: Manifest) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions", [])
    )


def child_ready(obj: Manifest | None) -> tuple[bool, str]:
    """Whether one observed child is ready, with a one-line reason. ``None``: not created yet."""
    if obj is None:
        return False, "not created yet"
    kind, st = obj["kind"], obj.get("status") or {}
    name = obj["metadata"]["name"]
    if kind == "Deployment":
        want = (obj.get("spec") or {}).get("replicas", 1)
        have = st.get("readyReplicas", 0) or 0
        return have >= want, f"{name}: {have}/{want} replicas ready"
    if kind in ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"):
        if kind == "KafkaNodePool":  # Strimzi reports node pools through the Kafka's Ready condition
            return True, f"{name}: node pool"
        ok = _strimzi_ready(obj)
        return ok, f"{name}: {'Ready' if ok else 'not Ready'}"
    if kind == "Job":
        if st.get("succeeded"):
            return True, f"{name}: succeeded"
        if any(c.get("type") == "Failed" and c.get("status") == "True" for c in st.get("conditions", [])):
            return False, f"{name}: failed"
        return False, f"{name}: running"
    return True, f"{name}: exists"  # Services, ConfigMaps, CronJobs are ready once they exist


def conditions(
    observed: dict[str, list[tuple[Manifest, Manifest | None]]],
    previous: list[dict],
    generation: int | None,
    conflicts: list[str] | None = None,
) -> list[dict]:
    """One condition per component from (desired, observed) pairs, plus the overall ``Ready``.

    ``conflicts``: children (``Kind/name``) whose name an object this resource does not own already
    has; they add a ``NameConflict`` condition and keep ``Ready`` False until someone renames or deletes
    one of the two. lastTransitionTime only moves when a condition's status flips, as Kubernetes
    conventions ask.
    """
    before = {c["type"]: c for c in previous or []}
    out: dict[str, dict] = {}
    for component, pairs in observed.items():
        ctype = CONDITION.get(component)
        if ctype is None:
            continue
        results = [child_ready(obj) for _, obj in pairs]
        ok = all(r for r, _ in results)
        msgs = [m for r, m in results if not r] or [m for _, m in results]
        prev = out.get(ctype)
        if prev is not None:  # two components on one condition: ready only if both are
            ok = ok and prev["status"] == "True"
        out[ctype] = {
            "type": ctype,
            "status": "True" if ok else "False",
            "reason": "ChildrenReady" if ok else "ChildrenNotReady",
            "message": "; ".join(msgs),
        }
    pending = sorted(t for t, c in out.items() if c["status"] != "True")
    if conflicts:
        out["NameConflict"] = {
            "type": "NameConflict",
            "status": "True",
            "reason": "ObjectNotOwned",
            "message": (
                f"{', '.join(sorted(conflicts))} already exist and are not owned by this StreamingTraining; "
                "left untouched: rename this resource or remove them"
            )[:1000],
        }
    out["Ready"] = {
        "type": "Ready",
        "status": "False" if pending or conflicts else "True",
        "reason": "NameConflict" if conflicts else "Waiting" if pending else "PipelineReady",
        "message": (
            "children not created: names taken by objects this resource does not own"
            if conflicts
            else ("waiting for " + ", ".join(pending))
            if pending
            else "every child is ready"
        ),
    }
    result = []
    for ctype, cond in out.items():
        if generation is not None:
            cond["observedGeneration"] = generation
        old = before.get(ctype)
        cond["lastTransitionTime"] = (
            old["lastTransitionTime"]
            if old and old.get("status") == cond["status"] and old.get("lastTransitionTime")
            else now()
        )
        result.append(cond)
    return result


def phase(conds: list[dict], failed: bool = False) -> str:
    """Failed needs a person: an invalid spec, or a child's name taken by an object we do not own."""
    if failed or any(c["type"] == "NameConflict" and c["status"] == "True" for c in conds):
        return "Failed"
    ready = next((c for c in conds if c["type"] == "Ready"), None)
    if ready is None:
        return "Pending"
    return "Ready" if ready["status"] == "True" else "Progressing"


def last_training(jobs: list[Manifest]) -> dict | None:
    """Result of the newest trainer Job (by creation time), for status.lastTraining."""
    if not jobs:
        return None
    job = max(jobs, key=lambda j: j["metadata"].get("creationTimestamp") or "")
    st = job.get("status") or {}
    if st.get("succeeded"):
        result = "Succeeded"
    elif any(c.get("type") == "Failed" and c.get("status") == "True" for c in st.get("conditions", [])):
        result = "Failed"
    else:
        result = "Running"
    # Every key, null when unknown: status is written with a JSON merge patch, which keeps the keys a
    # new value leaves out (a running Job must not show the previous Job's finishedAt).
    return {"job": job["metadata"]["name"], "result": result, "finishedAt": st.get("completionTime")}


_SAMPLE = re.compile(
    r"^(streamtrain_scorer_model_version|streamtrain_scorer_pinned_version|streamtrain_scorer_anomaly_rate)"
    r"(?:\{[^}]*\})?\s+(\S+)$",
    re.M,
)
#: Model versions are at most nine digits (the models topic's key pattern ``model/\d{1,9}/...``).
MAX_MODEL_VERSION = 999_999_999


def _sample_value(metric: str, raw: str) -> float | None:
    """One sample's value if it is a finite number in the metric's range, else None. A scorer's /metrics
    is input from a Pod (any Pod a tenant labels as a scorer can serve one): NaN, Inf, words or
    a version of 10**30 must not stop the status of anyone else."""
    try:
        value = float(raw)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    if metric != "streamtrain_scorer_anomaly_rate" and (value != int(value) or value > MAX_MODEL_VERSION):
        return None
    if metric == "streamtrain_scorer_anomaly_rate" and value > 1:
        return None
    return value


def scorer_metrics(text: str, source: str = "scorer") -> dict[str, str]:
    """modelVersion, pinnedVersion and anomalyRate from a scorer's Prometheus /metrics text (what the printer
    columns and ``streamtrain models list`` show).
    A value that is not a number in range is logged and skipped; the other metric still counts."""
    found: dict[str, float] = {}
    for m in _SAMPLE.finditer(text):
        value = _sample_value(m.group(1), m.group(2))
        if value is None:
            log.warning("scorer_metric_rejected metric=%s value=%.40r source=%s", m.group(1), m.group(2), source)
            continue
        found[m.group(1)] = value
    out = {}
    if found.get("streamtrain_scorer_model_version"):
        out["modelVersion"] = str(int(found["streamtrain_scorer_model_version"]))
    if found.get("streamtrain_scorer_pinned_version"):
        out["pinnedVersion"] = str(int(found["streamtrain_scorer_pinned_version"]))
    if "streamtrain_scorer_anomaly_rate" in found:
        out["anomalyRate"] = f"{found['streamtrain_scorer_anomaly_rate']:.4f}"
    return out


def combine_scorers(per_scorer: list[dict[str, str]]) -> dict[str, str | None]:
    """One status from every scorer replica's metrics: the newest model version any of them serves
    (the CRD's "newest model version"), every version served (more than one while a swap or a pin
    reaches the replicas), the version pinned (``streamtrain models pin``; null once unpinned, which the
    status merge patch turns into no key) and the mean anomaly rate of those that report one."""
    out: dict[str, str | None] = {}
    versions = [int(m["modelVersion"]) for m in per_scorer if "modelVersion" in m]
    if versions:
        out["modelVersion"] = str(max(versions))
        out["servingVersions"] = ",".join(str(v) for v in sorted(set(versions)))
        pinned = [int(m["pinnedVersion"]) for m in per_scorer if "pinnedVersion" in m]
        out["pinnedVersion"] = str(max(pinned)) if pinned else None
    rates = [float(m["anomalyRate"]) for m in per_scorer if "anomalyRate" in m]
    if rates:
        out["anomalyRate"] = f"{sum(rates) / len(rates):.4f}"
    return out
