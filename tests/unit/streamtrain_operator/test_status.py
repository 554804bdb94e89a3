"""Pure status logic and the adopted children, without a cluster."""

from __future__ import annotations

import kubernetes_validate
import pytest

from streamtrain.operator import children, status
from tests.k8s.conftest import KUBE_VERSIONS, ROOT, load_example


def body(example: str = "full") -> dict:
    b = load_example(ROOT / f"examples/{example}.yaml")
    b["metadata"].update(namespace="ns", uid="u-1")
    return b


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_adopted_children_validate_and_are_owned(version):
    for m in children.desired(body()):
        assert m["metadata"]["ownerReferences"][0]["uid"] == "u-1" and m["metadata"]["namespace"] == "ns"
        if not m["apiVersion"].startswith(
            "kafka.strimzi.io"
        ):  # Strimzi kinds: tests/unit/streamtrain_operator/test_render.py
            kubernetes_validate.validate(m, version, strict=True)


def test_stale_children_are_pruned_but_training_jobs_kept():
    wanted = children.desired(body())
    external = body()
    external["spec"]["mqtt"] = {"mode": "external", "host": "mqtt.example", "port": 1883}
    now = children.desired(external)
    old_job = {"kind": "Job", "metadata": {"name": "plant-7-train-old"}}
    gone = {children.key(m) for m in children.stale(wanted + [old_job], now)}
    assert gone == {
        ("ConfigMap", "plant-7-hivemq"),  # the broker's config.xml
        ("PersistentVolumeClaim", "plant-7-hivemq-data"),  # and its data: an external broker keeps its own
        ("Deployment", "plant-7-hivemq"),
        ("Service", "plant-7-hivemq"),
        ("PodDisruptionBudget", "plant-7-hivemq"),
        ("NetworkPolicy", "plant-7-mqtt"),  # the broker's listener policy goes with the broker
    }


def deployment(name: str, want: int, ready: int) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": want},
        "status": {"readyReplicas": ready},
    }


def test_conditions_follow_children_and_keep_transition_times():
    d = deployment("x-scorer", 2, 1)
    conds = status.conditions({"scorer": [(d, d)], "kafka": [({}, None)]}, [], 3)
    by = {c["type"]: c for c in conds}
    assert by["ScorerReady"]["status"] == "False" and "1/2" in by["ScorerReady"]["message"]
    assert by["KafkaReady"]["message"] == "not created yet"
    assert by["Ready"]["status"] == "False" and "KafkaReady" in by["Ready"]["message"]
    assert status.phase(conds) == "Progressing" and by["Ready"]["observedGeneration"] == 3
    kafka = {
        "kind": "Kafka",
        "metadata": {"name": "x"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    ok = deployment("x-scorer", 2, 2)
    conds2 = status.conditions(
        {"scorer": [(ok, ok)], "kafka": [(kafka, kafka)]},
        [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in conds],
        3,
    )
    assert status.phase(conds2) == "Ready"
    # Flipped conditions get a new transition time; none stays at the old one here since all flipped.
    assert all(c["lastTransitionTime"] != "2020-01-01T00:00:00Z" for c in conds2)
    conds3 = status.conditions({"scorer": [(ok, ok)], "kafka": [(kafka, kafka)]}, conds2, 3)
    assert [c["lastTransitionTime"] for c in conds3] == [c["lastTransitionTime"] for c in conds2]


def test_last_training_and_scorer_metrics():
    jobs = [
        {
            "kind": "Job",
            "metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"succeeded": 1, "completionTime": "2026-01-01T00:05:00Z"},
        },
        {
            "kind": "Job",
            "metadata": {"name": "b", "creationTimestamp": "2026-01-02T00:00:00Z"},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]},
        },
    ]
    # finishedAt is null, not absent: a JSON merge patch must remove the previous Job's time.
    assert status.last_training(jobs) == {"job": "b", "result": "Failed", "finishedAt": None}
    assert status.last_training(jobs[:1]) == {"job": "a", "result": "Succeeded", "finishedAt": "2026-01-01T00:05:00Z"}
    text = (
        "# HELP streamtrain_scorer_model_version Champion model version\n"
        "streamtrain_scorer_model_version 7.0\nstreamtrain_scorer_anomaly_rate 0.0125\n"
    )
    assert status.scorer_metrics(text) == {"modelVersion": "7", "anomalyRate": "0.0125"}
    assert status.scorer_metrics("streamtrain_scorer_model_version 0.0\n") == {}


def test_scorer_replicas_combine_into_one_status():
    # The newest version any replica serves; the mean rate of those that report one; a replica
    # without a model yet (no version) does not hide the others'.
    per = [
        {"modelVersion": "3", "anomalyRate": "0.0100"},
        {"modelVersion": "4", "anomalyRate": "0.0300"},
        {"anomalyRate": "0.0200"},
    ]
    # Not pinned: pinnedVersion null, so the status merge patch removes one left by an earlier pin.
    assert status.combine_scorers(per) == {
        "modelVersion": "4",
        "servingVersions": "3,4",
        "pinnedVersion": None,
        "anomalyRate": "0.0200",
    }
    assert status.combine_scorers([{}, {}]) == {}
    assert status.combine_scorers([]) == {}


def test_a_pin_shows_in_the_status_with_every_version_served():
    # `streamtrain models pin 2` while one replica has swapped and the other still serves 5.
    texts = [
        "streamtrain_scorer_model_version 2.0\nstreamtrain_scorer_pinned_version 2.0\n",
        "streamtrain_scorer_model_version 5.0\nstreamtrain_scorer_pinned_version 0.0\n",
    ]
    per = [status.scorer_metrics(t) for t in texts]
    assert per == [{"modelVersion": "2", "pinnedVersion": "2"}, {"modelVersion": "5"}]
    assert status.combine_scorers(per) == {"modelVersion": "5", "servingVersions": "2,5", "pinnedVersion": "2"}
    # A pinned version out of range is skipped like a served one.
    assert status.scorer_metrics("streamtrain_scorer_model_version 3\nstreamtrain_scorer_pinned_version NaN\n") == {
        "modelVersion": "3"
    }


@pytest.mark.parametrize(
    "version_line",
    ["NaN", "+Inf", "-Inf", "-1", "3.5", "1e30", "seven", "1e9"],
)
def test_a_scorer_metric_out_of_range_is_skipped_not_raised(version_line, caplog):
    # A scorer's /metrics is served by a Pod (issue 24, finding 11): NaN made int() raise ValueError.
    text = f"streamtrain_scorer_model_version {version_line}\nstreamtrain_scorer_anomaly_rate 0.0125\n"
    assert status.scorer_metrics(text, source="10.0.0.9") == {"anomalyRate": "0.0125"}
    assert "scorer_metric_rejected metric=streamtrain_scorer_model_version" in caplog.text
    assert "source=10.0.0.9" in caplog.text
    for rate in ("NaN", "Infinity", "1.5", "-0.1"):
        assert status.scorer_metrics(f"streamtrain_scorer_anomaly_rate {rate}\n") == {}
    assert status.scorer_metrics("streamtrain_scorer_model_version 999999999\n") == {"modelVersion": "999999999"}


def test_a_name_conflict_fails_the_phase_and_names_the_objects():
    ok = deployment("x-scorer", 1, 1)
    conds = status.conditions({"scorer": [(ok, ok)]}, [], 2, ["ConfigMap/x-preprocessing", "Service/x-hivemq"])
    by = {c["type"]: c for c in conds}
    assert by["NameConflict"]["status"] == "True" and by["NameConflict"]["reason"] == "ObjectNotOwned"
    assert "ConfigMap/x-preprocessing, Service/x-hivemq" in by["NameConflict"]["message"]
    assert by["Ready"]["status"] == "False" and by["Ready"]["reason"] == "NameConflict"
    assert status.phase(conds) == "Failed"
    # Resolved: the condition goes, the phase follows the children again.
    conds = status.conditions({"scorer": [(ok, ok)]}, conds, 2, [])
    assert "NameConflict" not in {c["type"] for c in conds} and status.phase(conds) == "Ready"
