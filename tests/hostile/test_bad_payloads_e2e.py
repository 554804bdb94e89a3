"""10,000 generated hostile payloads over real MQTT into a real bridge, with good traffic in the
same run: the bridge never crashes, every bad payload lands in the dead-letter topic with its
reason, the metrics count them, and every good reading reaches the raw topic."""

from __future__ import annotations

import collections
import json
import random
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain import telemetry
from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack.local import free_port
from tests.ingest.test_bridge_e2e import bridge_factory, raw_keys, read_until_complete, scrape, simulate  # noqa: F401

pytestmark = pytest.mark.e2e

BAD = 10_000


def hostile_payloads(prefix: str, n: int, seed: int = 8) -> list[tuple[str, bytes, str]]:
    """(topic, payload, reason the bridge must give): random bytes, broken JSON, deep nesting,
    wrong shapes and types, huge numbers, oversized, other devices' topics, too many fields."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes, str]] = []

    def reading(dev: str, i: int) -> dict:
        return {"device_id": dev, "ts": 1_764_000_000 + i, "seq": i, "temperature": rng.uniform(-10, 90)}

    makers = [
        lambda d, i: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))),
        lambda d, i: b"[" * rng.randint(1000, 8000) + b"]" * rng.randint(0, 10),
        lambda d, i: b'{"device_id":"' + d.encode() + b'","ts":1,"seq":0,"t":' + b"{" * 3000 + b"}",
        lambda d, i: json.dumps(rng.choice([[1, 2], "text", 3.5, None, True, {"nested": {"x": 1}}])).encode(),
        lambda d, i: json.dumps({**reading(d, i), "temperature": rng.choice(["warm", [1], {"c": 1}, True])}).encode(),
        lambda d, i: json.dumps({**reading(d, i), "seq": rng.choice([-1, 1.5, "7", True, None])}).encode(),
        lambda d, i: json.dumps({**reading(d, i), "ts": rng.choice(["now", None, [1]])}).encode(),
        lambda d, i: json.dumps(
            {k: v for k, v in reading(d, i).items() if k != rng.choice(["device_id", "ts", "seq"])}
        ).encode(),
        lambda d, i: json.dumps(reading(d, i)).encode().replace(b'"temperature":', b'"temperature":1e999,"x":'),
        lambda d, i: json.dumps({**reading(d, i), "pad": "x" * 20_000}).encode(),
        lambda d, i: json.dumps({**reading(d, i), **{f"c{k}": k for k in range(100)}}).encode(),
        lambda d, i: json.dumps({**reading(d, i), "label": rng.choice([2, -1, "yes", 0.5])}).encode(),
        lambda d, i: json.dumps({**reading(d, i), "device_id": d + "/../x"}).encode(),
        lambda d, i: '{"device_id": "é\ud800"}'.encode("utf-8", "surrogatepass"),
    ]
    while len(out) < n:
        i = len(out)
        dev = f"{prefix}-{i % 50}"
        topic = f"devices/{dev}/telemetry"
        payload = makers[i % len(makers)](dev, i)
        if i % 17 == 0:  # a valid reading on another device's topic
            payload, topic = json.dumps(reading(dev, i)).encode(), f"devices/{prefix}-other/telemetry"
        result = telemetry.validate(payload, topic)
        if isinstance(result, telemetry.Reading):
            continue  # the generator made a good one by chance; only bad ones count here
        out.append((topic, payload, result.reason))
    return out


def test_10000_hostile_payloads_are_dead_lettered_with_reasons_and_good_traffic_completes(pipeline, bridge_factory):  # noqa: F811
    metrics_port = free_port()
    bridge = bridge_factory(metrics_port=metrics_port)
    prefix = f"h{uuid.uuid4().hex[:6]}"
    bad = hostile_payloads(prefix, BAD)
    want = collections.Counter(reason for _, _, reason in bad)
    assert len(want) >= 7, want  # the generator covers many kinds of bad input

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", pipeline.mqtt_port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload, _ in bad]
    fleet, _ = simulate(pipeline, 20, 50, f"g{uuid.uuid4().hex[:6]}")  # good traffic, same run
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()

    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= BAD, timeout=180)
    got = collections.Counter(headers_dict(m)["streamtrain.reason"] for m in dead)
    print(f"dead letters={len(dead)} by reason={dict(got)}")
    assert len(dead) == BAD
    assert got == want
    for m in dead:
        h = headers_dict(m)
        assert h["streamtrain.source"].startswith("mqtt:devices/") and h["streamtrain.detail"]
    expected = {(d, s) for d in fleet.device_ids for s in range(50)}
    good = read_until_complete(pipeline, expected)
    assert set(raw_keys(good)) == expected

    assert bridge.proc.poll() is None, "the bridge crashed"
    m = scrape(metrics_port)
    assert m["streamtrain_bridge_received_total"] == BAD + len(expected)
    assert m["streamtrain_bridge_forwarded_total"] == len(expected)
    assert sum(v for k, v in m.items() if k.startswith("streamtrain_bridge_deadlettered_total")) == BAD
    for reason, count in want.items():
        assert m[f'streamtrain_bridge_deadlettered_total{{reason="{reason}"}}'] == count
    assert urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).status == 200
    assert bridge.stop() == 0
    assert '"bridge_started"' in bridge.log() and bridge.log().count('"bridge_started"') == 1  # never restarted
