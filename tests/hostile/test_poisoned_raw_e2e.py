"""Issue 24, findings 7 and 8 on real Kafka: poisoned records written straight to the raw topic (as the
HiveMQ extension, kcat or a misconfigured producer can) reach a running `streamtrain preprocess`.
Each is dead-lettered with its reason, counted and logged; the preprocessor keeps running (no
crash-loop under exactly-once redelivery) and the device's next good readings still come out, in
the features and in the windows."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from streamtrain.kafka import headers_dict, producer_config, read_topic
from streamtrain.stack.local import free_port
from tests.ingest.test_bridge_e2e import scrape
from tests.programs import Program, settings_env

pytestmark = pytest.mark.e2e


def test_poisoned_raw_records_are_dead_lettered_and_the_next_good_ones_come_out(pipeline, tmp_path):
    now = time.time()

    def good(seq: int) -> bytes:
        r = {"device_id": "p", "ts": now - 120 + seq, "seq": seq, "temperature": 70.0, "current": 1.0}
        return json.dumps({**r, "vibration": 0.3, "pressure": 3.0}).encode()

    poisoned = [
        (b'{"device_id":"p","ts":"x","seq":20,"temperature":70}', "wrong_type"),
        (b'{"device_id":"p","ts":Infinity,"seq":21,"temperature":70}', "non_finite"),
        (b'{"device_id":null,"ts":1,"seq":22,"temperature":70}', "wrong_type"),
        (b'{"device_id":"p\\n","ts":1,"seq":23,"temperature":70}', "wrong_type"),
        (b'{"device_id":"p","ts":1e999,"seq":24,"temperature":70}', "non_finite"),
        (None, "malformed_json"),  # a record without a value (kcat -Z, a tombstone)
        (good(25).replace(b'"seq": 25', b'"seq": ' + str(10**30).encode()), "seq_jump"),
        (good(26).replace(str(now - 120 + 26).encode(), str((now + 26) * 1000).encode()), "clock_skew"),
    ]
    assert all(b != good(s) for (b, _), s in zip(poisoned[-2:], (25, 26)))  # the replacements happened
    p = Producer(producer_config(pipeline.kafka_bootstrap))

    def send(values) -> None:
        for v in values:
            p.produce(pipeline.topic_raw, v, key=b"p")  # one partition: in this order
        assert p.flush(30) == 0

    port = free_port()
    env = settings_env(pipeline, group_id=f"poison-{uuid.uuid4().hex[:6]}", metrics_port=port, max_seq_jump=1000)
    prog = Program(["preprocess"], env, tmp_path / "preprocess.log").start()
    try:
        send(good(s) for s in range(10))
        read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, until=lambda m: len(m) >= 10, timeout=90)
        send([b for b, _ in poisoned] + [good(s) for s in range(30, 40)])
        feats = read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, until=lambda m: len(m) >= 20, timeout=60)
        dead = read_topic(
            pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= len(poisoned), timeout=30
        )
        assert prog.proc.poll() is None, prog.log()[-3000:]  # still the first process: nothing crashed it
        metrics = scrape(port)
    finally:
        assert prog.stop() == 0, prog.log()[-3000:]

    assert [json.loads(m.value())["seq"] for m in feats] == [*range(10), *range(30, 40)]
    assert [(m.value(), headers_dict(m)["streamtrain.reason"]) for m in dead] == poisoned
    assert all(headers_dict(m)["streamtrain.source"].startswith(f"kafka:{pipeline.topic_raw}/") for m in dead)
    for reason in ("wrong_type", "non_finite", "seq_jump", "clock_skew"):
        want = sum(r == reason for _, r in poisoned)
        assert metrics[f'streamtrain_preprocess_deadlettered_total{{reason="{reason}"}}'] == want, reason
    lines = [json.loads(x) for x in prog.log().splitlines() if x.startswith("{")]
    logged = {x["reason"] for x in lines if x["event"] == "records_deadlettered" and x["level"] == "warning"}
    assert logged == {r for _, r in poisoned}
    windows = [json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_windows)]
    assert sum(w["readings"] for w in windows) == 20  # every good reading in a window, the poisoned in none


def test_a_device_that_falls_silent_gets_its_last_window_emitted_by_the_timer(pipeline, tmp_path):
    """Issue 24, finding 9: with no later reading to close it, a silent device's open window used to wait
    for the next stop; the idle timer emits it (in a committed transaction) while the program runs."""
    start = (time.time() - 300) // 10 * 10  # one 10 s window (the default spec's) holds all five
    p = Producer(producer_config(pipeline.kafka_bootstrap))
    for seq in range(5):
        r = {"device_id": "s", "ts": start + 1 + seq, "seq": seq, "temperature": 70.0, "current": 1.0}
        p.produce(pipeline.topic_raw, json.dumps({**r, "vibration": 0.3, "pressure": 3.0}).encode(), key=b"s")
    assert p.flush(30) == 0
    env = settings_env(pipeline, group_id=f"idle-{uuid.uuid4().hex[:6]}", window_idle_s=2, device_idle_s=10)
    prog = Program(["preprocess"], env, tmp_path / "preprocess.log").start()
    try:
        windows = read_topic(pipeline.kafka_bootstrap, pipeline.topic_windows, until=lambda m: len(m) >= 1, timeout=90)
        prog.wait_log('"devices_evicted"', timeout=60)
        assert prog.proc.poll() is None
    finally:
        assert prog.stop() == 0, prog.log()[-3000:]
    (w,) = [json.loads(m.value()) for m in windows]
    assert w["device_id"] == "s" and w["readings"] == 5
    lines = [json.loads(x) for x in prog.log().splitlines() if x.startswith("{")]
    assert any(x["event"] == "idle_windows_closed" and x["count"] == 1 for x in lines)
    assert any(x["event"] == "devices_evicted" and x["why"] == "idle" for x in lines)
    # Emitted once: the stop found nothing open.
    assert len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_windows)) == 1
