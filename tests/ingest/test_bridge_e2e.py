"""Ingestion end to end on the real brokers: simulator -> HiveMQ -> bridge -> Kafka."""

from __future__ import annotations

import asyncio
import collections
import csv
import json
import time
import urllib.request
import uuid

import paho.mqtt.client as mqtt
import pytest

from streamtrain.kafka import headers_dict, read_topic
from streamtrain.simulator.fleet import Fleet, FleetConfig
from streamtrain.simulator.publish import CsvReplayConfig, replay_csv, run_fleet
from streamtrain.stack.local import free_port
from tests.programs import Program, drop_mqtt_session, settings_env
from tests.records import assert_valid

pytestmark = pytest.mark.e2e


@pytest.fixture
def bridge_factory(pipeline, tmp_path):
    """Starts bridge subprocesses sharing one test-unique subscription group."""
    group = f"bridge-{uuid.uuid4().hex[:6]}"
    started: list[Program] = []
    client_ids: set[str] = set()

    def start(client_id: str = "b0", **extra) -> Program:
        cid = f"{group}-{client_id}"
        client_ids.add(cid)
        env = settings_env(pipeline, client_id=cid, share_group=group, **extra)
        # A log per start: a restarted bridge (same client id, same session) must not find its
        # predecessor's "mqtt_subscribed" and be taken as ready before it has even started.
        prog = Program(["bridge"], env, tmp_path / f"{cid}-{len(started)}.log").start()
        prog.wait_log('"mqtt_subscribed"', timeout=60)
        started.append(prog)
        return prog

    yield start
    for prog in started:
        if prog.killed:
            continue
        # A bridge that died on its own is a failure even when the test's own checks passed.
        assert prog.stop() == 0, f"bridge exited with {prog.proc.returncode}:\n{prog.log()[-3000:]}"
    for cid in client_ids:
        drop_mqtt_session(pipeline.mqtt_port, cid)


def raw_keys(messages) -> collections.Counter:
    return collections.Counter((json.loads(m.value())["device_id"], json.loads(m.value())["seq"]) for m in messages)


def read_until_complete(pipeline, expected: set, timeout: float = 120.0):
    def done(msgs):
        return expected <= set(raw_keys(msgs))

    return read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=done, timeout=timeout)


def simulate(pipeline, devices: int, count: int, prefix: str, rate: float = 0.0, **kw):
    fleet = Fleet(FleetConfig(devices=devices, seed=7, device_prefix=prefix))
    report = asyncio.run(
        run_fleet(fleet, "127.0.0.1", pipeline.mqtt_port, rate=rate, count=count, duration=None, connections=4, **kw)
    )
    assert report.unacked_at_exit == 0
    return fleet, report


def test_100_devices_x_200_messages_all_arrive(pipeline, bridge_factory):
    bridge = bridge_factory()
    prefix = f"d{uuid.uuid4().hex[:6]}"
    fleet, report = simulate(pipeline, 100, 200, prefix)
    assert report.published == 20_000
    expected = {(d, s) for d in fleet.device_ids for s in range(200)}
    msgs = read_until_complete(pipeline, expected)
    counts = raw_keys(msgs)
    missing = expected - set(counts)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    print(f"raw records={len(msgs)} distinct={len(counts)} missing={len(missing)} duplicates={duplicates}")
    assert not missing, f"{len(missing)} missing; bridge log:\n{bridge.log()[-4000:]}"
    assert set(counts) == expected  # nothing foreign, nothing invented
    assert duplicates == 0  # one bridge, no crash: at-least-once allows none here
    assert_valid("telemetry", msgs)
    # Keyed by device id, so each device's readings sit in one partition in seq order.
    by_device = collections.defaultdict(list)
    for m in msgs:
        body = json.loads(m.value())
        assert m.key().decode() == body["device_id"]
        by_device[body["device_id"]].append((m.partition(), body["seq"]))
    for readings in by_device.values():
        assert len({p for p, _ in readings}) == 1
        assert [s for _, s in readings] == sorted(s for _, s in readings)
    assert '"bridge_stopped"' not in bridge.log()
    assert bridge.stop() == 0
    assert '"undelivered": 0' in bridge.log() and '"unacked": 0' in bridge.log()


def test_idle_bridge_resubscribes_and_then_takes_traffic_without_duplicates(pipeline, bridge_factory):
    """The idle nudge (SUBSCRIBE sent again, a work-around for HiveMQ CE losing a shared subscriber)
    must neither lose nor repeat messages, whether it comes while idle or between bursts."""
    metrics_port = free_port()
    bridge_factory(metrics_port=metrics_port, resubscribe_idle_s=0.3)

    def nudged_since(before: float) -> float:
        deadline = time.monotonic() + 30
        while (now := scrape(metrics_port).get("streamtrain_bridge_resubscribes_total", 0)) <= before:
            assert time.monotonic() < deadline, "bridge never re-subscribed while idle"
            time.sleep(0.1)
        return now

    nudges = nudged_since(1)  # one is sent right after the first SUBACK
    expected = set()
    for burst in range(3):  # traffic, idle (nudge), traffic ...
        fleet, _ = simulate(pipeline, 10, 30, f"r{burst}{uuid.uuid4().hex[:5]}")
        expected |= {(d, s) for d in fleet.device_ids for s in range(30)}
        nudges = nudged_since(nudges)
    counts = raw_keys(read_until_complete(pipeline, expected))
    assert set(counts) == expected
    assert sum(c - 1 for c in counts.values()) == 0


def bad_payloads(prefix: str, n: int) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason), cycling through every kind of bad input."""
    kinds = []
    for i in range(n):
        dev = f"{prefix}-{i % 10}"
        topic = f"devices/{dev}/telemetry"
        good = {"device_id": dev, "ts": time.time(), "seq": i, "temperature": 1.0}
        k = i % 9
        if k == 0:
            kinds.append((topic, b"{oops" + str(i).encode(), "malformed_json"))
        elif k == 1:
            kinds.append((topic, json.dumps({**good, "temperature": "warm"}).encode(), "wrong_type"))
        elif k == 2:
            kinds.append((topic, f'{{"device_id":"{dev}","ts":1,"seq":{i},"temperature":NaN}}'.encode(), "non_finite"))
        elif k == 3:
            kinds.append((topic, json.dumps({"device_id": dev, "seq": i}).encode(), "missing_field"))
        elif k == 4:
            kinds.append((topic, b"x" * 20000, "oversized"))
        elif k == 5:
            kinds.append((f"devices/{prefix}-other/telemetry", json.dumps(good).encode(), "topic_mismatch"))
        elif k == 6:
            kinds.append((topic, b"[1,2,3]", "not_an_object"))
        elif k == 7:
            kinds.append((topic, f'{{"device_id":"{dev}","ts":1,"seq":{i},"t":-Infinity}}'.encode(), "non_finite"))
        else:
            kinds.append((topic, json.dumps({**good, "seq": -5}).encode(), "wrong_type"))
    return kinds


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_bad_payloads_all_dead_lettered_while_good_traffic_completes(pipeline, bridge_factory):
    metrics_port = free_port()
    bridge = bridge_factory(metrics_port=metrics_port)
    prefix = f"x{uuid.uuid4().hex[:6]}"
    bad = bad_payloads(prefix, 1000)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", pipeline.mqtt_port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload, _ in bad]
    fleet, _ = simulate(pipeline, 20, 50, f"g{uuid.uuid4().hex[:6]}")
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()

    dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= 1000, timeout=90)
    assert len(dead) == 1000
    got = collections.Counter(headers_dict(m)["streamtrain.reason"] for m in dead)
    want = collections.Counter(reason for _, _, reason in bad)
    assert got == want
    for m in dead:
        h = headers_dict(m)
        assert h["streamtrain.source"].startswith("mqtt:devices/")
        assert h["streamtrain.detail"]
    expected = {(d, s) for d in fleet.device_ids for s in range(50)}
    good = read_until_complete(pipeline, expected)
    assert set(raw_keys(good)) == expected
    assert bridge.proc.poll() is None  # still running after 1000 bad inputs
    m = scrape(metrics_port)
    assert m["streamtrain_bridge_received_total"] == 2000
    assert m["streamtrain_bridge_forwarded_total"] == 1000
    assert sum(v for k, v in m.items() if k.startswith("streamtrain_bridge_deadlettered_total")) == 1000
    assert m['streamtrain_bridge_deadlettered_total{reason="oversized"}'] == want["oversized"]
    assert m["streamtrain_bridge_inflight"] == 0
    assert m["streamtrain_bridge_delivery_seconds_count"] == 2000
    assert urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).status == 200


def test_bridge_sigkill_mid_stream_loses_nothing(pipeline, bridge_factory):
    bridge = bridge_factory("victim")
    prefix = f"k{uuid.uuid4().hex[:6]}"
    devices, count = 50, 200
    fleet = Fleet(FleetConfig(devices=devices, seed=11, device_prefix=prefix))

    async def scenario():
        task = asyncio.create_task(
            run_fleet(fleet, "127.0.0.1", pipeline.mqtt_port, rate=20.0, count=count, duration=None, connections=2)
        )
        # Kill once part of the stream has gone through the bridge.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            seen = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5)
            if len(seen) >= devices * 30:
                break
        bridge.kill()
        killed_at = len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5))
        await asyncio.sleep(1.0)  # devices keep publishing while no bridge runs
        restarted = await asyncio.to_thread(bridge_factory, "victim")
        report = await task
        return killed_at, restarted, report

    killed_at, restarted, report = asyncio.run(scenario())
    assert killed_at < devices * count, "bridge was killed too late to test anything"
    assert report.unacked_at_exit == 0
    expected = {(d, s) for d in fleet.device_ids for s in range(count)}
    msgs = read_until_complete(pipeline, expected, timeout=120)
    counts = raw_keys(msgs)
    missing = expected - set(counts)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    print(f"killed after {killed_at} records; total={len(msgs)} missing={len(missing)} duplicates={duplicates}")
    assert not missing


def test_csv_replay_arrives_in_order_per_device(pipeline, bridge_factory, tmp_path):
    bridge_factory()
    path = tmp_path / "recording.csv"
    dev_a, dev_b = f"pumpA{uuid.uuid4().hex[:4]}", f"pumpB{uuid.uuid4().hex[:4]}"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "machine", "temp", "flow", "note", "is_fault"])
        for i in range(300):
            w.writerow(
                [
                    f"2024-03-01T10:{i // 60:02d}:{i % 60:02d}Z",
                    dev_a if i % 3 else dev_b,
                    20 + i * 0.1,
                    5 - i * 0.01,
                    "ok",
                    1 if i % 50 == 0 else 0,
                ]
            )
    cfg = CsvReplayConfig(path, device_column="machine", label_column="is_fault", speed=0)
    report = asyncio.run(replay_csv(cfg, "127.0.0.1", pipeline.mqtt_port))
    assert report.published == 300 and report.unacked_at_exit == 0
    msgs = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 300, timeout=60)
    assert len(msgs) == 300
    assert_valid("telemetry", msgs)
    per_device = collections.defaultdict(list)
    for m in msgs:
        per_device[m.key().decode()].append(json.loads(m.value()))
    assert set(per_device) == {dev_a, dev_b}
    for dev, rows in per_device.items():
        assert [r["seq"] for r in rows] == list(range(len(rows)))
        assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
        assert all(set(r) >= {"temp", "flow"} and "note" not in r for r in rows)
    assert sum(r.get("label", 0) for rows in per_device.values() for r in rows) == 6
    first = per_device[dev_b][0]
    assert first["temp"] == 20.0 and first["label"] == 1


def test_two_bridges_side_by_side_share_the_load(pipeline, bridge_factory):
    first = bridge_factory("left", connections=2)
    second = bridge_factory("right", connections=2)
    prefix = f"s{uuid.uuid4().hex[:6]}"
    fleet, report = simulate(pipeline, 40, 100, prefix)
    expected = {(d, s) for d in fleet.device_ids for s in range(100)}
    counts = raw_keys(read_until_complete(pipeline, expected))
    assert set(counts) == expected
    assert sum(c - 1 for c in counts.values()) == 0
    for prog in (first, second):
        assert prog.stop() == 0
    forwarded = [
        int(float(line.split('"forwarded": ')[1].split(",")[0]))
        for prog in (first, second)
        for line in prog.log().splitlines()
        if '"bridge_stopped"' in line
    ]
    # Together they forwarded each message once. How HiveMQ spreads the group is its own choice
    # (seen: sometimes all to one member while it keeps up), so the split is reported, not asserted.
    assert sum(forwarded) == len(expected)
    print(f"forwarded per bridge: {forwarded}")
