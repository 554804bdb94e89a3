"""Heterogeneous fleet on real Kafka and TensorFlow: per-device baselines against one global
normalization, dense against windowed models, all on the same stream and scored live.

30 devices of 3 types whose baselines differ by several anomaly sizes, with lasting degraded
states and spikes (fixed seed). The real preprocessor builds features and per-device
sequences; the trainer learns from Kafka; the live scorer scores every input; quality is
computed from the scores topic. A device that joined just before training is marked
``warmup``; devices first seen after training are scored with the fallback and marked."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from confluent_kafka import Producer

from streamtrain.kafka import ensure_topics, producer_config
from streamtrain.modelcodec import publish_model, read_versions
from streamtrain.quality import evaluate, format_table, training_ranges
from streamtrain.simulator.hetero import HeteroConfig, HeterogeneousFleet
from streamtrain.topics import pipeline_topics
from streamtrain.trainer.train import TrainSettings, train_once
from tests.fleet.stream import SEQUENCE_LENGTH, FleetFeed, count, fleet_settings, preprocessor, score_all, wait_until
from tests.records import assert_valid

TRAIN_STEPS, TOTAL_STEPS, LATE_STEPS = 300, 480, 20
CFG = HeteroConfig(devices=30, seed=2026, fault_fraction=0.06, episode_readings=(15, 60))


@pytest.fixture(scope="module")
def fleet_run(local_stack):
    s = fleet_settings(local_stack.bootstrap)
    feed = FleetFeed(s, CFG)
    late = HeterogeneousFleet(HeteroConfig(devices=1, seed=5, device_prefix="late", fault_fraction=0.0))
    new = HeterogeneousFleet(HeteroConfig(devices=3, seed=6, device_prefix="new", fault_fraction=0.0))
    pre = preprocessor(s)
    try:
        feed.steps(TRAIN_STEPS - LATE_STEPS)
        feed.steps(LATE_STEPS, extra=[("late", late)])  # 20 readings, 5 sequences: both below the warm-up
        wait_until(
            "training data preprocessed",
            lambda: ((n := count(s.kafka_bootstrap, s.topic_features)) >= feed.produced, f"{n}/{feed.produced}"),
        )
        models = {}
        for kind in ("dense", "windowed"):
            for baselines in ("device", "global"):
                topic = f"{s.topic_models}.{kind}-{baselines}"
                ensure_topics(
                    s.kafka_bootstrap,
                    [t for t in pipeline_topics(s.model_copy(update={"topic_models": topic})) if t.name == topic],
                )
                ts = TrainSettings(
                    **{**s.model_dump(), "topic_models": topic},
                    train_records=10**6,
                    model_kind=kind,
                    baselines=baselines,
                    layers="16,1,16",
                    threshold_k=8.0,
                    warmup_records=50,
                    epochs=12 if kind == "dense" else 6,
                    min_records=500,
                    cache=True,
                )
                models[(kind, baselines)] = (topic, train_once(ts))
        # The same windowed version with 2-of-3 smoothing of the decision (no retraining).
        mv = read_versions(s.kafka_bootstrap, models[("windowed", "device")][0])[-1]
        topic = f"{s.topic_models}.windowed-smoothed"
        ensure_topics(
            s.kafka_bootstrap,
            [t for t in pipeline_topics(s.model_copy(update={"topic_models": topic})) if t.name == topic],
        )
        meta = {**mv.metadata, "smoothing": {"k": 2, "m": 3}, "requires": mv.metadata["requires"] + ["smoothing"]}
        publish_model(Producer(producer_config(s.kafka_bootstrap)), topic, mv.artefact, meta)
        models[("windowed", "device 2of3")] = (topic, meta)
        feed.steps(TOTAL_STEPS - TRAIN_STEPS, extra=[("late", late), ("new", new)])
        per_device = collections.Counter()
        for fleet, steps in (
            (feed.fleet, TOTAL_STEPS),
            (late, TOTAL_STEPS - TRAIN_STEPS + LATE_STEPS),
            (new, TOTAL_STEPS - TRAIN_STEPS),
        ):
            for d in fleet.device_ids:
                per_device[d] = steps
        n_seq = sum(max(0, n - SEQUENCE_LENGTH + 1) for n in per_device.values())

        def preprocessed():
            nf, nq = count(s.kafka_bootstrap, s.topic_features), count(s.kafka_bootstrap, s.topic_sequences)
            return nf >= feed.produced and nq >= n_seq, f"features {nf}/{feed.produced}, sequences {nq}/{n_seq}"

        wait_until("everything preprocessed", preprocessed)
    finally:
        pre.stop()
    scores = {}
    for (kind, baselines), (topic, _) in models.items():
        expected = feed.produced if kind == "dense" else n_seq
        scores[(kind, baselines)] = score_all(
            s, topic, f"{s.topic_scores}.{kind}-{baselines.replace(' ', '-')}", expected
        )
    return s, models, scores, feed.produced, n_seq


def quality(scores: list[dict], exclude_prefixes=("new", "late")):
    """Quality over the fleet's own devices (the joiners carry no anomalies)."""
    return evaluate([r for r in scores if not str(r["device_id"]).startswith(exclude_prefixes)])


@pytest.mark.e2e
def test_per_device_baselines_beat_global_normalization_on_a_heterogeneous_fleet(fleet_run):
    s, models, scores, produced, n_seq = fleet_run
    table = {}
    for key, recs in scores.items():
        ev = quality(recs)
        table[key] = ev.overall.as_dict()
        print(f"\n== {key[0]} model, {key[1]} normalization ==\n{format_table(ev)}")
    print("\nmodel     baselines    records  precision  recall     f1  false_alarm  missed_alarm")
    for (kind, baselines), d in table.items():
        print(
            f"{kind:9} {baselines:11} {d['records']:8} {d['precision']:10} {d['recall']:7} {d['f1']:6} "
            f"{d['false_alarm_rate']:12} {d['missed_alarm_rate']:13}"
        )

    dense = evaluate(scores[("dense", "device")])
    assert dense.overall.records == produced and dense.duplicates == 0, "every feature record scored exactly once"
    fleet_only = table[("dense", "device")]
    assert fleet_only["anomalies"] > 300, "the stream carried lasting anomalies"
    assert fleet_only["f1"] >= 0.90, fleet_only
    assert fleet_only["false_alarm_rate"] <= 0.05, fleet_only
    # The same model and stream with one fleet-wide normalization and threshold is clearly worse.
    assert table[("dense", "global")]["f1"] <= fleet_only["f1"] - 0.3, table
    assert table[("windowed", "global")]["f1"] <= table[("windowed", "device")]["f1"] - 0.3, table
    # The windowed model scored every sequence once and holds up on the same stream.
    windowed = evaluate(scores[("windowed", "device")])
    assert windowed.overall.records == n_seq and windowed.duplicates == 0
    assert table[("windowed", "device")]["f1"] >= 0.85, table[("windowed", "device")]
    # 2-of-3 smoothing scored live: isolated alarms dropped, one reading of delay at each fault's edges.
    smoothed = table[("windowed", "device 2of3")]
    assert evaluate(scores[("windowed", "device 2of3")]).overall.records == n_seq and smoothed["f1"] >= 0.8, smoothed
    # Per-device thresholds came from each device's own residuals.
    meta = models[("dense", "device")][1]
    thresholds = meta["baselines"]["threshold"]
    assert len(thresholds) == CFG.devices and np.std(thresholds) > 0


@pytest.mark.e2e
def test_new_and_warming_devices_are_scored_with_the_fallback_and_marked(fleet_run):
    _, models, scores, _, _ = fleet_run
    meta = models[("dense", "device")][1]
    assert "late-00000" in meta["baselines"]["seen"] and "late-00000" not in meta["baselines"]["devices"]
    for key in (("dense", "device"), ("windowed", "device")):
        by_kind = collections.defaultdict(set)
        for r in scores[key]:
            by_kind[r["baseline"]].add(r["device_id"])
            assert np.isfinite(r["score"]) and r["threshold"] > 0
        assert by_kind["fallback"] == {"new-00000", "new-00001", "new-00002"}, key
        assert by_kind["warmup"] == {"late-00000"}, key
        assert len(by_kind["device"]) == CFG.devices
        fallback = [r for r in scores[key] if r["baseline"] == "fallback"]
        assert all(r["baseline_records"] == 0 for r in fallback)
        assert all(r["baseline_records"] >= 50 for r in scores[key] if r["baseline"] == "device")
    assert {r["baseline"] for r in scores[("dense", "global")]} == {"global"}
    for key in scores:  # per-device baselines, windowed input and smoothing: the same score record
        assert_valid("score", scores[key])


@pytest.mark.e2e
def test_evaluate_prints_quality_per_device_and_writes_the_report(fleet_run, tmp_path):
    import subprocess
    import sys

    from tests.programs import settings_env

    s, _, scores, _, _ = fleet_run
    topic = f"{s.topic_scores}.dense-device"
    env = settings_env(s.model_copy(update={"topic_scores": topic, "topic_models": f"{s.topic_models}.dense-device"}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtrain.cli.main",
            "evaluate",
            "--per-device",
            "--report",
            str(tmp_path / "report"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for column in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate"):
        assert column in out
    # Held-out readings only: the version trained on the fleet's first readings, and the scorer scored them too.
    trained = training_ranges(mv.metadata for mv in read_versions(s.kafka_bootstrap, f"{s.topic_models}.dense-device"))
    ev = evaluate(scores[("dense", "device")], training=trained)
    assert sum(ev.trained_on.values()) > 0
    assert f"trained_on={sum(ev.trained_on.values())} " in out
    overall_row = next(line.split() for line in out.splitlines() if line.strip().startswith("all "))
    assert overall_row[1:] == [
        str(ev.overall.as_dict()[c])
        for c in ("records", "anomalies", "precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")
    ]
    for device in ("dev-00000", "new-00002", "late-00000", "compressor", "fallback", "warmup"):
        assert device in out
    html = (tmp_path / "report" / "index.html").read_text()
    assert "Quality per device" in html and "dev-00029" in html and html.count("data:image/png") >= 2
