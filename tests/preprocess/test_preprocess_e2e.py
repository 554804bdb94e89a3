"""`streamtrain preprocess` on real Kafka: raw -> features/windows/dead letters, offsets after delivery."""

import json

import pytest
from confluent_kafka import Producer

from streamtrain.kafka import headers_dict, producer_config, read_topic
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from tests.programs import Program, settings_env
from tests.records import assert_valid
from tests.unit.streamtrain.preprocessing.test_ksql import simulated

pytestmark = pytest.mark.e2e


def test_preprocess_program_writes_exactly_what_the_engine_computes(pipeline, tmp_path):
    records = simulated(4, 50, seed=3)
    records += [{"device_id": "d0", "ts": 5000.0, "seq": 999, "temperature": 70.0, "current": 1.0}]  # no pressure
    p = Producer(producer_config(pipeline.kafka_bootstrap))
    for r in records:
        p.produce(pipeline.topic_raw, json.dumps(r).encode(), key=r["device_id"].encode())
    p.produce(pipeline.topic_raw, b"{broken", key=b"d1")
    assert p.flush(30) == 0

    spec = PreprocessSpec.default()
    engine = Engine(spec)
    expected = [res.features for res in map(engine.process, records) if res.features]
    filtered = sum(1 for r in records if Engine(spec).process(r).filtered)
    assert filtered > 0 and len(expected) > 100

    prog = Program(
        ["preprocess"], settings_env(pipeline, group_id=f"pp-{pipeline.topic_raw}"), tmp_path / "preprocess.log"
    ).start()
    feats = read_topic(
        pipeline.kafka_bootstrap, pipeline.topic_features, until=lambda m: len(m) >= len(expected), timeout=90
    )
    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= 2, timeout=30)
    assert prog.stop() == 0, prog.log()[-2000:]
    got = {(f["device_id"], f["seq"]): f for f in (json.loads(m.value()) for m in feats)}
    assert len(feats) == len(expected) == len(got)
    assert_valid("features", feats)
    for e in expected:
        g = got[(e["device_id"], e["seq"])]
        assert g["power"] == e["power"] and g["label"] == e["label"]
        assert set(g) >= set(spec.feature_names)
    assert sorted(headers_dict(m)["streamtrain.reason"] for m in dead) == ["malformed_json", "missing_field"]
    windows = [json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_windows, timeout=30)]
    assert windows and all(w["readings"] >= 1 and w["window_end_ms"] - w["window_start_ms"] == 10_000 for w in windows)
    assert sum(w["readings"] for w in windows) == len(expected)  # every feature record in exactly one window


def test_after_a_restart_a_repeat_is_dropped_and_a_reused_seq_dead_lettered(pipeline, tmp_path):
    """The seen readings and their fingerprints come back from the features topic's headers."""
    readings = [
        {
            "device_id": "r",
            "ts": 100.0 + i,
            "seq": i,
            "temperature": 70.0,
            "current": 1.0,
            "vibration": 0.3,
            "pressure": 3.0,
        }
        for i in range(10)
    ]
    p = Producer(producer_config(pipeline.kafka_bootstrap))

    def send(batch):
        for r in batch:
            p.produce(pipeline.topic_raw, json.dumps(r).encode(), key=b"r")
        assert p.flush(30) == 0

    def run_until(features: int, dead: int, log: str) -> Program:
        prog = Program(
            ["preprocess"], settings_env(pipeline, group_id=f"pr-{pipeline.topic_raw}"), tmp_path / log
        ).start()
        read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, until=lambda m: len(m) >= features, timeout=90)
        read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= dead, timeout=30)
        assert prog.stop() == 0, prog.log()[-2000:]
        return prog

    send(readings)
    run_until(10, 0, "first.log")
    send([readings[3], {**readings[4], "temperature": 71.0}, {**readings[9], "seq": 10, "ts": 110.0}])
    second = run_until(11, 1, "second.log")

    feats = [json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_features)]
    assert sorted(f["seq"] for f in feats) == list(range(11))
    (dead,) = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter)
    assert headers_dict(dead)["streamtrain.reason"] == "seq_reused" and json.loads(dead.value())["temperature"] == 71.0
    lines = [json.loads(x) for x in second.log().splitlines() if x.startswith("{")]
    assert any(x["event"] == "state_restored" and x["features"] == 10 for x in lines)
    assert any(x["event"] == "duplicates_dropped" and x["count"] == 1 for x in lines)
    assert any(x["event"] == "seq_reused_deadlettered" and x["level"] == "warning" for x in lines)
