"""A Sparkplug B edge node, end to end: payloads built by an independent Sparkplug library (pysparkplug), published
by a real MQTT client on the real HiveMQ CE, through the bridge (preset sparkplug-b), to Kafka."""

from __future__ import annotations

import json
import queue
import time
import uuid

import paho.mqtt.client as mqtt
import pysparkplug as psp
import pytest

from streamtrain.kafka import headers_dict, read_topic
from streamtrain.stack.local import free_port
from tests.ingest.test_bridge_e2e import bridge_factory, scrape  # noqa: F401 - a fixture
from tests.ingest.test_device_formats_e2e import publish_all

pytestmark = pytest.mark.e2e

DT = psp.DataType


def births(now_ms: int) -> tuple[bytes, bytes]:
    nbirth = psp.NBirth(
        timestamp=now_ms,
        seq=0,
        metrics=[
            psp.Metric(timestamp=now_ms, name="bdSeq", datatype=DT.INT64, value=3),
            psp.Metric(timestamp=now_ms, name="Node Control/Rebirth", datatype=DT.BOOLEAN, value=False),
            psp.Metric(timestamp=now_ms, name="Supply/Voltage", datatype=DT.FLOAT, value=24.0, alias=1),
        ],
    ).encode()
    dbirth = psp.DBirth(
        timestamp=now_ms,
        seq=1,
        metrics=[
            psp.Metric(timestamp=now_ms, name="Motor/Speed RPM", datatype=DT.DOUBLE, value=0.0, alias=10),
            psp.Metric(timestamp=now_ms, name="Motor/Temperature", datatype=DT.FLOAT, value=20.0, alias=11),
            psp.Metric(timestamp=now_ms, name="Inputs/Count", datatype=DT.INT32, value=0, alias=12),
            psp.Metric(timestamp=now_ms, name="Properties/Serial", datatype=DT.STRING, value="A-17", alias=14),
        ],
    ).encode()
    return nbirth, dbirth


def ddata(seq: int, ms: int, i: int) -> bytes:
    return psp.DData(
        timestamp=ms,
        seq=seq,
        metrics=[  # aliases only, as after the birth
            psp.Metric(timestamp=ms, name=None, datatype=DT.DOUBLE, value=1400.0 + i, alias=10),
            psp.Metric(timestamp=ms, name=None, datatype=DT.FLOAT, value=60.5 + i, alias=11),
            psp.Metric(timestamp=ms, name=None, datatype=DT.INT32, value=-i, alias=12),
        ],
    ).encode()


def listen(port: int, topic: str) -> tuple[mqtt.Client, queue.Queue]:
    """The edge node's side of its commands: it subscribes to its NCMD topic."""
    inbox: queue.Queue = queue.Queue()
    subscribed = queue.Queue()  # type: ignore[var-annotated]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.on_message = lambda c, u, m: inbox.put(m)
    client.on_subscribe = lambda c, u, mid, rc, p: subscribed.put(mid)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=0)
    subscribed.get(timeout=30)
    return client, inbox


def test_edge_node_data_arrives_as_readings_and_what_it_cannot_be_is_dead_lettered(pipeline, bridge_factory):  # noqa: F811
    port = free_port()
    bridge = bridge_factory(ingest_mapping="sparkplug-b", metrics_port=port)
    group, edge = f"g{uuid.uuid4().hex[:6]}", "edge-1"
    node_topic = f"spBv1.0/{group}/{{}}/{edge}"
    motor = f"spBv1.0/{group}/{{}}/{edge}/motor-1"
    commands, ncmd = listen(pipeline.mqtt_port, node_topic.format("NCMD"))
    now_ms = int(time.time() * 1000) - 60_000
    try:
        # The bridge has seen no birth of this edge node (it started after it, say): data by alias cannot be read.
        early = ddata(40, now_ms - 1000, 0)
        malformed = b'{"temperature": 21.5}'
        publish_all(pipeline.mqtt_port, [(motor.format("DDATA"), early), (motor.format("DDATA"), malformed)])

        # ... so it asks the edge node for its births, as the specification says.
        request = ncmd.get(timeout=60)
        [command] = psp.NCmd.decode(request.payload).metrics
        assert (command.name, command.value) == ("Node Control/Rebirth", True)

        # The edge node answers with its births, then publishes data by alias; seq 2..4, then a gap (7).
        nbirth, dbirth = births(now_ms)
        stamps = [now_ms + 1000 * i for i in range(4)]
        node_data = psp.NData(
            timestamp=now_ms + 500,
            seq=5,
            metrics=[psp.Metric(timestamp=None, name=None, datatype=DT.FLOAT, value=23.75, alias=1)],
        ).encode()
        publish_all(
            pipeline.mqtt_port,
            [
                (node_topic.format("NBIRTH"), nbirth),
                (motor.format("DBIRTH"), dbirth),
                *[(motor.format("DDATA"), ddata(2 + i, ms, i)) for i, ms in enumerate(stamps[:3])],
                (node_topic.format("NDATA"), node_data),
                (motor.format("DDATA"), ddata(7, stamps[3], 3)),
                (motor.format("DDEATH"), psp.DDeath(timestamp=stamps[3] + 1, seq=8).encode()),
            ],
        )

        raw = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(m) >= 5, timeout=60)
        got = sorted((json.loads(m.value()) for m in raw), key=lambda r: (r["device_id"], r["seq"]))
        assert got == [
            {"device_id": f"{group}:{edge}", "ts": (now_ms + 500) / 1000, "seq": now_ms + 500, "supply_voltage": 23.75},
            *[
                {
                    "device_id": f"{group}:{edge}:motor-1",
                    "ts": ms / 1000,
                    "seq": ms,
                    "motor_speed_rpm": 1400.0 + i,
                    "motor_temperature": 60.5 + i,
                    "inputs_count": float(-i),
                }
                for i, ms in enumerate(stamps)
            ],
        ]
        assert {m.key() for m in raw} == {f"{group}:{edge}".encode(), f"{group}:{edge}:motor-1".encode()}

        dead = read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, until=lambda m: len(m) >= 2, timeout=60)
        assert len(dead) == 2
        by_reason = {headers_dict(m)["streamtrain.reason"]: m for m in dead}
        assert set(by_reason) == {"unknown_alias", "malformed_protobuf"}
        assert by_reason["unknown_alias"].value() == early
        assert by_reason["malformed_protobuf"].value() == malformed
        for m in dead:
            assert headers_dict(m)["streamtrain.source"] == f"mqtt:{motor.format('DDATA')}"
            assert m.key() == f"{group}:{edge}:motor-1".encode()

        deadline = time.monotonic() + 10
        want = {
            'streamtrain_bridge_sparkplug_messages_total{type="NBIRTH"}': 1,
            'streamtrain_bridge_sparkplug_messages_total{type="DBIRTH"}': 1,
            'streamtrain_bridge_sparkplug_messages_total{type="DDATA"}': 6,
            'streamtrain_bridge_sparkplug_messages_total{type="NDATA"}': 1,
            'streamtrain_bridge_sparkplug_messages_total{type="DDEATH"}': 1,
            "streamtrain_bridge_sparkplug_seq_gaps_total": 1,
            "streamtrain_bridge_sparkplug_rebirth_requests_total": 1,
            'streamtrain_bridge_deadlettered_total{reason="unknown_alias"}': 1,
            'streamtrain_bridge_deadlettered_total{reason="malformed_protobuf"}': 1,
            "streamtrain_bridge_forwarded_total": 5,
        }
        while {k: scrape(port).get(k) for k in want} != want:
            got_metrics = {k: scrape(port).get(k) for k in want}
            assert time.monotonic() < deadline, {k: (v, want[k]) for k, v in got_metrics.items() if v != want[k]}
            time.sleep(0.1)
        log = bridge.log()
        for event in ('"sparkplug_birth"', '"sparkplug_seq_gap"', '"sparkplug_death"', '"sparkplug_rebirth_requested"'):
            assert event in log, event
        assert ncmd.empty(), "one rebirth request per interval (the seq gap came within it)"
    finally:
        commands.disconnect()
        commands.loop_stop()


def test_ingest_check_reads_sparkplug_births_and_data(pipeline):
    """The dry run keeps births like the bridge: data by alias published after an NBIRTH/DBIRTH becomes readings."""
    import subprocess
    import threading

    from tests.programs import STREAMTRAIN, settings_env

    group, edge = f"c{uuid.uuid4().hex[:6]}", "edge-9"
    now_ms = int(time.time() * 1000) - 30_000
    nbirth, dbirth = births(now_ms)
    messages = [
        (f"spBv1.0/{group}/NBIRTH/{edge}", nbirth),
        (f"spBv1.0/{group}/DBIRTH/{edge}/motor-1", dbirth),
        (f"spBv1.0/{group}/DDATA/{edge}/motor-1", ddata(2, now_ms + 1000, 1)),
        (f"spBv1.0/{group}/DDATA/{edge}/motor-1", b"\xff\xff"),
    ]
    env = {**settings_env(pipeline), "PYTHONUNBUFFERED": "1"}
    check = subprocess.Popen(
        [*STREAMTRAIN, "ingest", "check", "--mapping", "sparkplug-b", "--subscription", f"spBv1.0/{group}/#"]
        + ["--seconds", "20", "--max-messages", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(check.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not any(line.startswith("mapping sparkplug-b") for line in lines):  # subscribed: live messages from now on
        assert time.monotonic() < deadline and check.poll() is None, (
            lines,
            check.stderr.read() if check.stderr else "",
        )
        time.sleep(0.05)
    publish_all(pipeline.mqtt_port, messages)
    assert check.wait(timeout=60) == 0, (lines, check.stderr.read() if check.stderr else "")
    reader.join(10)
    reading = next(line for line in lines if line.startswith(f"reading  spBv1.0/{group}/DDATA/{edge}/motor-1 -> "))
    body = json.loads(reading.split(" -> ", 1)[1])
    assert body["device_id"] == f"{group}:{edge}:motor-1" and body["motor_speed_rpm"] == 1401.0
    assert any(f"spBv1.0/{group}/NBIRTH/{edge} -> sparkplug_birth" in line for line in lines), lines
    assert any("-> malformed_protobuf" in line for line in lines), lines
    assert not read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5)


def test_no_reading_lost_or_written_twice_across_a_bridge_sigkill(pipeline, bridge_factory):  # noqa: F811
    """DDATA of 2 readings each (two metric timestamps), metrics named and typed as an edge node may send them:
    the messages a killed bridge had in flight come again from its session; those whose readings were written are
    recognised by their fingerprint, the others are written once, every reading of a message or none."""
    import threading

    bridge = bridge_factory("victim", ingest_mapping="sparkplug-b")
    group, edge = f"k{uuid.uuid4().hex[:6]}", "edge-1"
    devices, count = 5, 120
    start = int(time.time() * 1000) - 600_000
    messages, seq = [], 1
    for i in range(count):
        for d in range(devices):
            ms = start + i * 1000 + d
            metrics = [
                psp.Metric(timestamp=ms, name="Flow", datatype=DT.DOUBLE, value=float(i)),
                psp.Metric(timestamp=ms + 500, name="Flow", datatype=DT.DOUBLE, value=i + 0.5),
            ]
            payload = psp.DData(timestamp=ms + 500, seq=seq % 256, metrics=metrics).encode(include_dtypes=True)
            messages.append((f"spBv1.0/{group}/DDATA/{edge}/m{d}", payload))
            seq += 1
    # About 30 s of publishing: the bridge is killed while most of it is still to come, however fast
    # the machine (at 2 ms a message everything was written before the 200th reading was seen).
    sender = threading.Thread(target=publish_all, args=(pipeline.mqtt_port, messages, 0.05))
    sender.start()
    deadline = time.monotonic() + 60
    while len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5)) < 200:
        assert time.monotonic() < deadline, bridge.log()[-3000:]
        time.sleep(0.2)
    bridge.kill()
    killed_at = len(read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=5))
    restarted = bridge_factory("victim", ingest_mapping="sparkplug-b")
    sender.join(120)
    assert not sender.is_alive()
    total = devices * count * 2
    assert killed_at < total, "bridge was killed too late to test anything"

    def identities(msgs):
        return [(b["device_id"], b["seq"]) for b in (json.loads(m.value()) for m in msgs)]

    read_topic(
        pipeline.kafka_bootstrap, pipeline.topic_raw, until=lambda m: len(set(identities(m))) >= total, timeout=120
    )
    time.sleep(2)  # anything redelivered late arrives too, then count
    raw = read_topic(pipeline.kafka_bootstrap, pipeline.topic_raw, timeout=30)
    ids = identities(raw)
    missing, duplicates = total - len(set(ids)), len(ids) - len(set(ids))
    skipped = restarted.log().count('"redelivery_skipped"')
    print(
        f"sparkplug: killed after {killed_at} of {total} readings; missing={missing} duplicates={duplicates} "
        f"redeliveries recognised={skipped}"
    )
    assert missing == 0 and duplicates == 0, restarted.log()[-3000:]
    values = {(json.loads(m.value())["device_id"], json.loads(m.value())["flow"]) for m in raw}
    assert len(values) == total
    assert not read_topic(pipeline.kafka_bootstrap, pipeline.topic_deadletter, timeout=5)
