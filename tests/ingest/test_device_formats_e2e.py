"""Devices as they already publish, end to end: a real MQTT client -> HiveMQ -> bridge (with a mapping) -> Kafka."""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest

from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack.local import free_port
from tests.ingest import device_payloads as p
from tests.ingest.test_bridge_e2e import bridge_factory, scrape  # noqa: F401 - a fixture

pytestmark = pytest.mark.e2e


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(
    port: int, messages: list[tuple[str, bytes]], pause: float = 0.0, hold: tuple[int, threading.Event] | None = None
) -> None:
    """Publish at QoS 1 and wait for every PUBACK; ``hold=(k, event)`` waits for ``event`` before message k."""
    client = publisher(port)
    try:
        infos = []
        for i, (topic, payload) in enumerate(messages):
            if hold and i == hold[0]:
                assert hold[1].wait(120), "the test never released the held messages"
            infos.append(client.publish(topic, payload, qos=1))
            if pause:
                time.sleep(pause)
        for info in infos:
            info.wait_for_publish(30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def bodies(msgs) -> list[dict]:
    return [json.loads(m.value()) for m in msgs]


def _iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def preset_messages(preset: str, tag: str, now: float) -> tuple[list[tuple[str, bytes]], list[dict]]:
    """Three messages of one device of ``preset`` and the readings expected (ts None: the arrival time)."""
    out, want = [], []
    for i in range(3):
        if preset == "zigbee2mqtt":
            dev = f"z{tag}"
            body = {**p.ZIGBEE, "temperature": 20.0 + i}
            out.append((f"zigbee2mqtt/{dev}", p.encode(body)))
            want.append({"device_id": dev, "ts": None, **p.ZIGBEE_CHANNELS, "temperature": 20.0 + i})
        elif preset == "tasmota":
            dev = f"t{tag}"
            ts = float(int(now) - 60 + i)
            body = {**p.TASMOTA, "Time": _iso_utc(ts)}
            out.append((f"tele/{dev}/SENSOR", p.encode(body)))
            want.append({"device_id": dev, "ts": ts, "seq": int(ts * 1000), **p.TASMOTA_CHANNELS})
        elif preset == "esphome":  # one value per topic: each reading holds the device's last value of every channel
            dev = f"e{tag}"
            channel, value = [("temperature", 20.0), ("humidity", 48.0), ("temperature", 21.0)][i]
            out.append((f"{dev}/sensor/{channel}/state", str(value).encode()))
            held = {**(want[-1] if want else {}), "device_id": dev, "ts": None, channel: value}
            want.append(held)
        elif preset == "cloud":
            dev = f"c{tag}"
            ms = int(now * 1000) - 5000 + i
            body = {**p.CLOUD, "deviceId": dev, "timestamp": ms}
            out.append((f"fleet-{tag}/{dev}/data", p.encode(body)))
            want.append({"device_id": dev, "ts": ms / 1000, "seq": ms, **p.CLOUD_CHANNELS})
        else:
            dev = f"s{tag}"
            body = {**p.STREAMTRAIN, "device_id": dev, "ts": now - 10 + i, "seq": i}
            out.append((f"devices/{dev}/telemetry", p.encode(body)))
            want.append({k: v for k, v in body.items()})
    return out, want


BAD = {  # a payload on the preset's topic that the mapping refuses, and why
    "zigbee2mqtt": ("zigbee2mqtt/{tag}-switch", b'{"action":"single"}', "missing_field"),
    "tasmota": ("tele/{tag}-plug/SENSOR", b'{"Time":"yesterday","ENERGY":{"Power":1}}', "wrong_type"),
    "cloud": ("fleet/{tag}-a/data", b'{"deviceId":"other","timestamp":1,"telemetry":{"t":1}}', "topic_mismatch"),
    "esphome": ("{tag}-x/sensor/temperature/state", b"NaN", "non_finite"),
    "streamtrain": ("devices/{tag}-x/telemetry", b'{"device_id":"x"}', "missing_field"),
}


@pytest.mark.parametrize("preset", ["zigbee2mqtt", "tasmota", "cloud", "esphome", "streamtrain"])
def test_preset_payloads_arrive_as_readings_and_refusals_as_dead_letters(pipeline, bridge_factory, preset):  # noqa: F811
    bridge_factory(ingest_mapping=preset)
    tag = uuid.uuid4().hex[:6]
    now = time.time()
    messages, want = preset_messages(preset, tag, now)
    bad_topic, bad_payload, reason = BAD[preset]
    bad_topic = bad_topic.format(tag=tag)
    t0 = time.time()
    publish_all(pipeline.mqtt_port, [*messages, (bad_topic, bad_payload)])
    t1 = time.time()

    raw = bodies(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 3, timeout=60))
    raw.sort(key=lambda r: r["seq"])
    assert len(raw) == 3, raw
    for got, expected in zip(raw, want):
        if expected["ts"] is None:  # the arrival time, and seq its milliseconds
            assert t0 - 1 <= got["ts"] <= t1 + 5
            assert got["seq"] == pytest.approx(got["ts"] * 1000, abs=2)
            expected = {**expected, "ts": got["ts"], "seq": got["seq"]}
        assert got == pytest.approx(expected), (got, expected)
    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= 1, timeout=60)
    assert len(dead) == 1
    h = headers_dict(dead[0])
    assert h["streamtrain.reason"] == reason
    assert h["streamtrain.source"] == f"mqtt:{bad_topic}"
    assert dead[0].value() == bad_payload


def test_wider_subscription_counts_logs_and_dead_letters_unmatched_topics(pipeline, bridge_factory):  # noqa: F811
    port = free_port()
    bridge = bridge_factory(ingest_mapping="zigbee2mqtt", subscription="zigbee2mqtt/#", metrics_port=port)
    tag = uuid.uuid4().hex[:6]
    publish_all(
        pipeline.mqtt_port,
        [
            ("zigbee2mqtt/bridge/state", b'{"state":"online"}'),
            (f"zigbee2mqtt/{tag}/availability", b'{"state":"online"}'),
            (f"zigbee2mqtt/z{tag}", p.encode(p.ZIGBEE)),
        ],
    )
    raw = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 1, timeout=60)
    assert [json.loads(m.value())["device_id"] for m in raw] == [f"z{tag}"]
    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= 2, timeout=60)
    assert {headers_dict(m)["streamtrain.source"] for m in dead} == {
        "mqtt:zigbee2mqtt/bridge/state",
        f"mqtt:zigbee2mqtt/{tag}/availability",
    }
    assert {headers_dict(m)["streamtrain.reason"] for m in dead} == {"bad_topic"}
    deadline = time.monotonic() + 10
    while scrape(port).get("streamtrain_bridge_unmatched_topics_total", 0) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert '"topic_unmatched"' in bridge.log()


@pytest.mark.parametrize("preset", ["zigbee2mqtt", "cloud", "esphome"])
def test_no_seq_devices_neither_lost_nor_duplicated_across_bridge_sigkill(pipeline, bridge_factory, preset):  # noqa: F811
    """zigbee2mqtt: no timestamp (arrival time); cloud: the device's ms timestamp; esphome: one value per topic
    (arrival time). None sends a seq."""
    bridge = bridge_factory("victim", ingest_mapping=preset)
    tag = uuid.uuid4().hex[:5]
    devices, count = 10, 150
    now = time.time()
    messages = []
    for i in range(count):
        for d in range(devices):
            dev = f"n{tag}-{d}"
            if preset == "zigbee2mqtt":
                messages.append((f"zigbee2mqtt/{dev}", p.encode({"temperature": float(i), "linkquality": d})))
            elif preset == "esphome":
                messages.append((f"{dev}/sensor/t/state", str(i).encode()))
            else:
                body = {"deviceId": dev, "timestamp": int(now * 1000) - 600_000 + i * 100, "telemetry": {"t": i}}
                messages.append((f"fleet/{dev}/data", p.encode(body)))
    # The last third waits for the kill, so the bridge dies mid-stream however slowly the machine reads.
    killed = threading.Event()
    hold = (len(messages) * 2 // 3, killed)
    sender = threading.Thread(target=publish_all, args=(pipeline.mqtt_port, messages, 0.002, hold))
    sender.start()
    deadline = time.monotonic() + 60
    while len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5)) < devices * 30:
        assert time.monotonic() < deadline, bridge.log()[-3000:]
        time.sleep(0.2)
    bridge.kill()
    killed.set()
    killed_at = len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5))
    time.sleep(1.0)  # devices keep publishing while no bridge runs
    restarted = bridge_factory("victim", ingest_mapping=preset)
    sender.join(120)
    assert not sender.is_alive()
    total = devices * count
    assert killed_at < total, "bridge was killed too late to test anything"

    def complete(msgs):
        return len({(b["device_id"], b.get("temperature", b.get("t"))) for b in bodies(msgs)}) >= total

    msgs = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=complete, timeout=120)
    # Let anything redelivered late arrive too, then count.
    time.sleep(2)
    msgs = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=30)
    readings = collections.Counter((b["device_id"], b.get("temperature", b.get("t"))) for b in bodies(msgs))
    identities = collections.Counter((b["device_id"], b["seq"]) for b in bodies(msgs))
    missing = total - len(readings)
    duplicates = sum(c - 1 for c in readings.values())
    skipped = restarted.log().count('"redelivery_skipped"')
    print(
        f"{preset}: killed after {killed_at} of {total}; raw={len(msgs)} missing={missing} duplicates={duplicates} "
        f"redeliveries recognised={skipped}"
    )
    assert missing == 0
    assert duplicates == 0, restarted.log()[-3000:]
    assert all(c == 1 for c in identities.values())
    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, timeout=5)
    assert not dead


@pytest.mark.parametrize("preset", ["zigbee2mqtt", "cloud"])
def test_message_forwarded_but_not_acknowledged_is_not_written_again(pipeline, tmp_path, preset):
    """The state a SIGKILL leaves between Kafka's delivery and the PUBACK, made on purpose: a bridge session
    received a message, its reading is in the raw topic, the PUBACK never went out. The next bridge with that
    session gets the message again from the broker (DUP) and must recognise it."""
    from confluent_kafka import Producer

    from streamtrain import ingest_mapping as mappings
    from streamtrain.bridge.app import FINGERPRINT_HEADER
    from tests.programs import Program, drop_mqtt_session, settings_env

    group, cid = f"rd-{uuid.uuid4().hex[:6]}", f"rd-{uuid.uuid4().hex[:6]}"
    mapping = mappings.PRESETS[preset]
    tag = uuid.uuid4().hex[:6]
    messages, _ = preset_messages(preset, tag, time.time())
    topic, payload = messages[0]

    got: list[mqtt.MQTTMessage] = []
    dead_bridge = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5, manual_ack=True)
    dead_bridge.on_message = lambda c, u, m: got.append(m)
    from streamtrain.mqtt import connect_properties

    dead_bridge.connect("127.0.0.1", pipeline.mqtt_port, clean_start=True, properties=connect_properties(3600))
    dead_bridge.loop_start()
    dead_bridge.subscribe([(f"$share/{group}/{f}", 1) for f in mapping.subscriptions])
    bridge = None
    try:
        deadline = time.monotonic() + 10
        while not got:
            publish_all(pipeline.mqtt_port, [(topic, payload)])
            time.sleep(0.5)
            assert time.monotonic() < deadline, "the stand-in bridge never received the message"
        first = got[0]

        def changed_reading(m):
            assert json.loads(m.value())["device_id"] == reading.device_id
            return m.value()

        assert not first.dup
        reading = mappings.apply(mapping, first.topic, first.payload, time.time())
        producer = Producer({"bootstrap.servers": pipeline.kafka_bootstrap})
        fp = mappings.fingerprint(first.topic, first.payload)
        producer.produce(
            pipeline.topic_raw,
            reading.to_json(),
            reading.device_id.encode(),
            headers=[(FINGERPRINT_HEADER, fp.encode())],
        )
        assert producer.flush(10) == 0
        dead_bridge.disconnect()  # no PUBACK sent: the session keeps the message for redelivery
        time.sleep(0.5)
        dead_bridge.loop_stop()

        port = free_port()
        env = settings_env(pipeline, client_id=cid, share_group=group, ingest_mapping=preset, metrics_port=port)
        bridge = Program(["bridge"], env, tmp_path / "bridge.log").start()
        bridge.wait_log('"redelivery_skipped"', timeout=60)
        assert scrape(port)["streamtrain_bridge_redelivered_duplicates_total"] == 1
        assert '"redelivery_fingerprints_loaded"' in bridge.log()
        # The same payload again soon after: taken for a repeat too (the same timestamp, or within the window);
        # another payload is a new reading.
        _, changed = messages[1]
        publish_all(pipeline.mqtt_port, [(topic, payload), (topic, changed)])
        deadline = time.monotonic() + 30
        while scrape(port)["streamtrain_bridge_forwarded_total"] < 1:
            assert time.monotonic() < deadline, bridge.log()[-3000:]
            time.sleep(0.1)
        assert scrape(port)["streamtrain_bridge_redelivered_duplicates_total"] == 2
        raw = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=10)
        assert [m.value() for m in raw] == [reading.to_json(), changed_reading(raw[1])]
    finally:
        if bridge is not None:
            assert bridge.stop() == 0
        drop_mqtt_session(pipeline.mqtt_port, cid)


def test_ingest_check_prints_readings_refusals_and_unmatched_topics(pipeline):
    """The dry run on the real broker: retained and live messages, nothing written to Kafka."""
    import subprocess

    from tests.programs import STREAMTRAIN, settings_env

    tag = uuid.uuid4().hex[:6]
    retained = [
        (f"tele/t{tag}/SENSOR", p.encode(p.TASMOTA)),
        (f"tele/u{tag}/SENSOR", b'{"Time":"never","ENERGY":{"Power":1}}'),
        (f"tele/t{tag}/STATE", b'{"Uptime":"0T01:00:00"}'),
    ]
    client = publisher(pipeline.mqtt_port)
    try:
        for topic, payload in retained:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        env = settings_env(pipeline)
        out = subprocess.run(
            [*STREAMTRAIN, "ingest", "check", "--mapping", "tasmota", "--subscription", "tele/#", "--seconds", "5"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for topic, _ in retained:
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(10)  # clears the retained message
        client.disconnect()
        client.loop_stop()
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    reading = next(line for line in lines if line.startswith(f"reading  tele/t{tag}/SENSOR -> "))
    body = json.loads(reading.split(" -> ", 1)[1])
    assert body["device_id"] == f"t{tag}" and body["ts"] == p.TASMOTA_TS and body["energy_power"] == 42.0
    assert any(line.startswith(f"refused  tele/u{tag}/SENSOR -> wrong_type") for line in lines), out.stdout
    assert f"  tele/t{tag}/STATE (1)" in lines, out.stdout
    assert not read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5)


def test_tasmota_plug_through_bridge_and_preprocessor_to_features(pipeline, bridge_factory, tmp_path):  # noqa: F811
    """The derived seq (ms of Tasmota's Time) through the exactly-once preprocessor: every reading becomes a
    feature record, an hour of silence included, and a redelivered one does not come out twice."""
    from tests.programs import Program, settings_env

    bridge_factory(ingest_mapping="tasmota")
    spec = tmp_path / "plug.yaml"
    spec.write_text("features: [energy_power, energy_voltage, energy_current]\n")
    env = settings_env(pipeline, group_id=f"pp-{uuid.uuid4().hex[:6]}")
    pre = Program(["preprocess", "--spec", str(spec)], env, tmp_path / "preprocess.log").start()
    try:
        dev = f"t{uuid.uuid4().hex[:6]}"
        start = int(time.time()) - 7200
        stamps = [start + i for i in range(5)] + [start + 3600 + i for i in range(5)]  # an hour's silence
        messages = [
            (
                f"tele/{dev}/SENSOR",
                p.encode({**p.TASMOTA, "Time": _iso_utc(ts), "ENERGY": {"Power": i, "Voltage": 230, "Current": 0.1}}),
            )
            for i, ts in enumerate(stamps)
        ]
        publish_all(pipeline.mqtt_port, [*messages, messages[3]])  # the device resends one
        feats = read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, until=lambda m: len(m) >= 10, timeout=90)
        time.sleep(2)
        feats = read_topic(pipeline.kafka_bootstrap, pipeline.topic_features, timeout=10)
        got = sorted(json.loads(m.value())["seq"] for m in feats)
        assert got == [ts * 1000 for ts in stamps], pre.log()[-3000:]
        dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, timeout=5)
        assert not dead, [headers_dict(m) for m in dead]
    finally:
        assert pre.stop() == 0, pre.log()[-3000:]


def test_one_value_topics_merge_into_readings_and_survive_a_bridge_restart(pipeline, bridge_factory):  # noqa: F811
    """ESPHome publishes each sensor on its own topic: a reading holds the node's last value of each, and a
    restarted bridge takes them back from the raw topic (held_values_restored), so its first reading is whole."""
    tag = uuid.uuid4().hex[:6]
    dev = f"node-{tag}"
    first = bridge_factory("held", ingest_mapping="esphome")
    publish_all(pipeline.mqtt_port, [(f"{dev}/{t.split('/', 1)[1]}", v.encode()) for t, v in p.ESPHOME_DEVICE])
    raw = bodies(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 3, timeout=60))
    assert [sorted(k for k in r if k not in ("device_id", "ts", "seq")) for r in raw] == [
        ["temperature"],
        ["humidity", "temperature"],
        ["humidity", "temperature", "wifi_signal"],
    ]
    assert raw[-1] | {"ts": 0, "seq": 0} == {
        "device_id": dev,
        "ts": 0,
        "seq": 0,
        "temperature": 21.5,
        "humidity": 48.2,
        "wifi_signal": -61.0,
    }
    assert first.stop() == 0
    second = bridge_factory("held", ingest_mapping="esphome")
    assert '"held_values_restored"' in second.log()
    publish_all(pipeline.mqtt_port, [(f"{dev}/sensor/temperature/state", b"22.25")])
    raw = bodies(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 4, timeout=60))
    assert len(raw) == 4
    assert raw[-1]["seq"] > raw[-2]["seq"]
    assert {k: v for k, v in raw[-1].items() if k not in ("ts", "seq")} == {
        "device_id": dev,
        "temperature": 22.25,
        "humidity": 48.2,
        "wifi_signal": -61.0,
    }


def test_a_resources_whole_mapping_runs_in_the_real_bridge(pipeline, bridge_factory):  # noqa: F811
    """spec.ingest.mapping as the operator renders it (inline JSON in STREAMTRAIN_INGEST_MAPPING): the plugs'
    local time zone and a renamed channel, on the resource's own topics."""
    from streamtrain.operator.ingest import ingest_env

    tag = uuid.uuid4().hex[:6]
    spec = {
        "ingest": {
            "preset": "tasmota",
            "topics": [f"home-{tag}/{{device_id}}/SENSOR"],
            "mapping": {"ts_timezone": "Europe/Berlin", "rename": {"ENERGY_Power": "watts"}},
        }
    }
    env = {e["name"]: e["value"] for e in ingest_env(spec)}
    bridge_factory(ingest_mapping=env["STREAMTRAIN_INGEST_MAPPING"], ingest_topics=env["STREAMTRAIN_INGEST_TOPICS"])
    publish_all(
        pipeline.mqtt_port, [(f"home-{tag}/plug-9/SENSOR", p.encode({**p.TASMOTA, "Time": "2026-12-06T11:15:00"}))]
    )
    [raw] = bodies(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 1, timeout=60))
    channels = {("watts" if k == "energy_power" else k): v for k, v in p.TASMOTA_CHANNELS.items()}
    assert raw == pytest.approx(
        {"device_id": "plug-9", "ts": p.TASMOTA_TS, "seq": int(p.TASMOTA_TS * 1000), **channels}
    )  # 11:15 in Berlin is 10:15 UTC
