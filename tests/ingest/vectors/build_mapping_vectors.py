"""Writes tests/ingest/vectors/mappings.json: ingestion mappings applied to device payloads, each outcome
computed here by the Python implementation (``streamtrain.ingest_mapping.apply``) and asserted by both
tests/unit/repo/test_mapping_vectors.py and the HiveMQ extension's IngestMappingTest (Java).
Run: .venv/bin/python -m tests.ingest.vectors.build_mapping_vectors tests/ingest/vectors/mappings.json"""

from __future__ import annotations

import json
import sys

import paho.mqtt.client as mqtt

from streamtrain import ingest_mapping as m
from streamtrain import telemetry
from tests.ingest import device_payloads as dp

ARRIVED = dp.ARRIVED
CASES: list[dict] = []
SEQUENCES: list[dict] = []


def mapping(preset: str = "zigbee2mqtt", **fields) -> m.IngestMapping:
    return m.IngestMapping.model_validate({**m.PRESETS[preset].model_dump(), **fields})


def outcome(mp: m.IngestMapping, topic: str, payload: bytes, arrived: float, **kw) -> dict:
    r = m.apply(mp, topic, payload, arrived, arrival_seq=m.ArrivalSeq(), **kw)
    if isinstance(r, telemetry.Reading):
        return {"record": r.to_json().decode()}
    return {"reason": r.reason, "detail": r.detail}


def case(name: str, mp: m.IngestMapping, topic: str, payload, arrived: float = ARRIVED, **kw) -> None:
    raw = payload if isinstance(payload, bytes) else (payload if isinstance(payload, str) else json.dumps(payload))
    raw = raw if isinstance(raw, bytes) else raw.encode()
    c: dict = {"name": name, "mapping": mp.model_dump(mode="json"), "topic": topic, "arrived": arrived}
    try:
        c["payload"] = raw.decode()
    except UnicodeDecodeError:
        c["payload_hex"] = raw.hex()
    if "max_bytes" in kw:
        c["max_bytes"] = kw["max_bytes"]
    if "known_devices" in kw:
        c["known_devices"] = sorted(kw["known_devices"])
    c["subscribed"] = any(mqtt.topic_matches_sub(f, topic) for f in mp.subscriptions)
    c.update(outcome(mp, topic, raw, arrived, **kw))
    CASES.append(c)


Z, T, C = m.PRESETS["zigbee2mqtt"], m.PRESETS["tasmota"], m.PRESETS["cloud"]
ZT, TT, CT = dp.ZIGBEE_TOPIC, dp.TASMOTA_TOPIC, dp.CLOUD_TOPIC

# ---- each preset's example payloads (tests/ingest/device_payloads.py)
case("zigbee2mqtt example", Z, ZT, dp.ZIGBEE)
case("tasmota example", T, TT, dp.TASMOTA)
case("cloud example", C, CT, dp.CLOUD)
case("esphome example", m.PRESETS["esphome"], dp.ESPHOME_TOPIC, dp.ESPHOME)
case("streamtrain example", m.PRESETS["streamtrain"], dp.STREAMTRAIN_TOPIC, dp.STREAMTRAIN)
case("streamtrain preset refuses another shape", m.PRESETS["streamtrain"], "devices/dev-8/telemetry", dp.ZIGBEE)

# ---- timestamps
for text in [
    "2026-12-06T10:15:00Z",
    "2026-12-06T10:15:00+01:00",
    "2026-12-06T10:15:00-05:30",
    "2026-12-06T10:15:00+0100",
    "2026-12-06T10:15:00+01",
    "2026-12-06T10:15:00.123",
    "2026-12-06T10:15:00.1234567",
    "2026-12-06T10:15:00,5",
    "2026-12-06 10:15:00",
    "2026-12-06T10:15",
    "2026-12-06T10",
    "2026-12-06",
    "20261206T101500",
    "2026-12-06T10:15:00.123+01:00:30",
]:
    case(f"tasmota ISO {text}", T, TT, {**dp.TASMOTA, "Time": text})
berlin = mapping("tasmota", ts_timezone="Europe/Berlin")
for text in ["2026-12-06T10:15:00", "2026-07-01T10:15:00", "2026-10-25T02:30:00", "2026-03-29T02:30:00"]:
    case(f"ISO without zone in Europe/Berlin {text}", berlin, TT, {**dp.TASMOTA, "Time": text})
case("ISO with zone ignores ts_timezone", berlin, TT, {**dp.TASMOTA, "Time": "2026-12-06T10:15:00Z"})
case("ISO not a date", T, TT, {**dp.TASMOTA, "Time": "yesterday"})
case("ISO hour 25", T, TT, {**dp.TASMOTA, "Time": "2026-12-06T25:00:00"})
case("ISO day 31 of November", T, TT, {**dp.TASMOTA, "Time": "2026-11-31T10:00:00"})
case("ISO trailing space", T, TT, {**dp.TASMOTA, "Time": "2026-12-06T10:15:00 "})
case("ISO as a number", T, TT, {**dp.TASMOTA, "Time": 1765015200})
case("ISO before 1970", T, TT, {**dp.TASMOTA, "Time": "1969-12-31T23:59:59"})
case("timestamp missing", T, TT, {k: v for k, v in dp.TASMOTA.items() if k != "Time"})
for ts in [1_765_015_200_123, 1_765_015_200_123.5, 1_765_015_200_124.5, 0, 10**400, -5]:
    case(f"ms timestamp {str(ts)[:30]}", C, CT, {**dp.CLOUD, "timestamp": ts})
case("ms timestamp as a string", C, CT, {**dp.CLOUD, "timestamp": "1765015200123"})
case("ms timestamp true", C, CT, {**dp.CLOUD, "timestamp": True})
case("ms timestamp NaN", C, CT, json.dumps({**dp.CLOUD, "timestamp": 0}).replace('"timestamp": 0', '"timestamp": NaN'))
seconds = mapping("cloud", ts_format="s")
for ts in [1_765_015_200, 1_765_015_200.0004, 1_765_015_200.0005, 1_765_015_200.0015, 1e300]:
    case(f"s timestamp {ts!r}", seconds, CT, {**dp.CLOUD, "timestamp": ts})
case("s timestamp Infinity", seconds, CT, b'{"deviceId":"dev-7","timestamp":Infinity,"telemetry":{"t":1}}')
for arrived in [ARRIVED, 1_765_015_300.0005, 1_765_015_300.0015, 1_765_015_300.123456]:
    case(f"arrival time {arrived!r}", Z, ZT, dp.ZIGBEE, arrived=arrived)

# ---- device id
case("cloud device id missing", C, CT, {k: v for k, v in dp.CLOUD.items() if k != "deviceId"})
case("cloud device id a number", C, CT, {**dp.CLOUD, "deviceId": 7})
case("cloud device id with a space", C, CT, {**dp.CLOUD, "deviceId": "dev 7"})
case("cloud device id of another topic", C, CT, {**dp.CLOUD, "deviceId": "dev-8"})
nested_id = mapping("cloud", topics=["fleet/+/data"], device_id_path="meta.id")
case("device id at a nested path", nested_id, "fleet/x/data", {**dp.CLOUD, "meta": {"id": "dev-9"}})
case("nested device id path through a number", nested_id, "fleet/x/data", {**dp.CLOUD, "meta": 3})
case("unknown device", Z, ZT, dp.ZIGBEE, known_devices=frozenset({"other"}))
case("known device", Z, ZT, dp.ZIGBEE, known_devices=frozenset({"kitchen-sensor"}))
case("device level not a device id", Z, "zigbee2mqtt/" + "x" * 65, dp.ZIGBEE)
case("device level with a colon and dots", Z, "zigbee2mqtt/a:b.c", dp.ZIGBEE)

# ---- topics
case("topic with more levels (zigbee2mqtt/bridge/state)", Z, "zigbee2mqtt/bridge/state", dp.ZIGBEE)
case("topic of another root", Z, "tele/plug-1/SENSOR", dp.ZIGBEE)
case("empty device level", Z, "zigbee2mqtt/", dp.ZIGBEE)
case("tasmota STATE is not SENSOR", T, "tele/plug-1/STATE", dp.TASMOTA)
case("cloud empty fleet level", C, "/dev-7/data", dp.CLOUD)
two = mapping("zigbee2mqtt", topics=["plant/{device_id}/SENSOR", "z/{area}/{device_id}"])
case("second pattern matches", two, "z/hall/dev-3", {"t": 1})
case("first pattern matches", two, "plant/dev-3/SENSOR", {"t": 1})

# ---- payloads
case("oversized", Z, ZT, dp.ZIGBEE, max_bytes=64)
case("malformed JSON", Z, ZT, b'{"temperature": 21.5')
case("not an object", Z, ZT, b"[1, 2]")
case("not UTF-8", Z, ZT, b'{"t": 1, "\xff": 2}')
case("no numeric channel", Z, ZT, {"state": "ON", "last_seen": 5})
case("empty object", Z, ZT, {})
case("NaN channel", Z, ZT, b'{"temperature": NaN}')
case("-Infinity channel", Z, ZT, b'{"temperature": -Infinity}')
case("integer beyond a double", Z, ZT, {"temperature": 10**400})
case("large integers and floats as repr", Z, ZT, {"a": 123456789012345678, "b": 1e16, "c": 1e-5, "d": -0.0, "e": 0.1})
case("too many channels", Z, ZT, {f"c{i}": i for i in range(telemetry.MAX_CHANNELS + 1)})
case("as many channels as allowed", Z, ZT, {f"c{i}": i for i in range(telemetry.MAX_CHANNELS)})
case("duplicate keys keep the first place, the last value", Z, ZT, b'{"a": 1, "b": 2, "a": 3}')
case("a channel named ts is reserved", Z, ZT, {"ts": 5, "t": 1})
case("renamed onto a reserved name", mapping(rename={"x": "seq"}), ZT, {"x": 5})

# ---- channels: nesting, names, include/exclude/rename, booleans, non-numeric
deep: dict = {"v": 1}
for i in range(10):
    deep = {f"l{i}": deep}
case("nested deeper than 8 is not a channel", Z, ZT, {"t": 2, "deep": deep})
case("nested channels flattened", Z, ZT, {"a": {"b": {"c": 1.5}, "d": 2}, "E": {"FooBar": 3}})
case("separator and names kept", mapping(separator=".", names="keep"), ZT, {"ENERGY": {"ApparentPower": 50}})
case("snake_case of odd names", Z, ZT, {"co2-level": 1, "HTTPStatus": 2, "Température": 3, "__x__": 4, "aB1C": 5})
case(
    "include, exclude and rename",
    mapping(
        include=["ENERGY_*", "t?mp", "h[!x]m", "[ab]*"], exclude=["ENERGY_Total*"], rename={"ENERGY_Power": "watts"}
    ),
    ZT,
    {
        "ENERGY": {"Power": 42, "Total": 1, "TotalStartTime": 2, "Today": 3},
        "temp": 4,
        "hum": 5,
        "hxm": 6,
        "b": 7,
        "c": 8,
    },
)
case("exclude everything", mapping(exclude=["*"]), ZT, {"t": 1})
case("booleans as numbers", Z, ZT, {"on": True, "off": False, "t": 1})
case("booleans skipped", mapping(booleans="skip"), ZT, {"on": True, "t": 1})
case("only booleans, skipped", mapping(booleans="skip"), ZT, {"on": True})
for value in ["ON", None, [1, 2]]:
    case(f"non-numeric {json.dumps(value)} skipped", Z, ZT, {"state": value, "t": 1})
    case(f"non-numeric {json.dumps(value)} refused", mapping(non_numeric="refuse"), ZT, {"t": 1, "state": value})
case("refuse ignores excluded strings", mapping("zigbee2mqtt", non_numeric="refuse"), ZT, dp.ZIGBEE)
root = mapping("cloud", channels_root="telemetry.motor")
case("channels root nested", root, CT, dp.CLOUD)
case("channels root missing", C, CT, {k: v for k, v in dp.CLOUD.items() if k != "telemetry"})
case("channels root not an object", C, CT, {**dp.CLOUD, "telemetry": [1, 2]})
case("paths consumed are not channels", mapping("cloud", channels_root=None), CT, dp.CLOUD)

# ---- seq from a path
seq = mapping("cloud", seq_path="n")
for n in [3, 3.0, 2**70, -1, 3.5, "3", True]:
    case(f"seq {json.dumps(n)}", seq, CT, {**dp.CLOUD, "n": n})
case("seq missing", seq, CT, dp.CLOUD)

# ---- one value per topic, single messages (no held values: each reading has its own channel only)
E, ET = m.PRESETS["esphome"], dp.ESPHOME_TOPIC
for raw in ["21.5", "-3", "1e3", " 7 ", "true", '{"apower": 12.5, "voltage": 231, "output": true, "id": "x"}']:
    case(f"esphome value {raw}", E, ET, raw)
for raw in ["ON", "online", "", '"21.5"', "null", "[1, 2]", "NaN", "-Infinity", "+Infinity", "21.5.1"]:
    case(f"esphome non-numeric value {raw!r}", E, ET, raw)
case("esphome value refused as non-numeric", mapping("esphome", non_numeric="refuse"), ET, "ON")
case("esphome value not UTF-8", E, ET, b"\xff\xfe")
case("esphome value deep JSON", E, ET, "[" * 5000 + "]" * 5000)
case("esphome value excluded", mapping("esphome", exclude=["wifi*"]), "kitchen/sensor/wifi_signal/state", "-60")
case("esphome value renamed", mapping("esphome", rename={"temperature": "temp_c"}), ET, "21.5")
case("esphome bad device level", E, "bad device/sensor/temperature/state", "1")
case("esphome unknown device", E, ET, "1", known_devices=frozenset({"other"}))
case("esphome other component", E, "kitchen/binary_sensor/door/state", "ON")
case("esphome empty channel level", E, "kitchen/sensor//state", "1")
case(
    "value topic beside an object topic",
    mapping("zigbee2mqtt", topics=["z/{device_id}", "v/{device_id}/{channel}"]),
    "v/plug-1/power",
    "42",
)
case(
    "object topic beside a value topic",
    mapping("zigbee2mqtt", topics=["z/{device_id}", "v/{device_id}/{channel}"]),
    "z/plug-1",
    dp.ZIGBEE,
)


def sequence(name: str, mp: m.IngestMapping, messages: list[tuple[str, str, float]]) -> None:
    """Messages applied in order with one ArrivalSeq and one HeldValues: each reading, or "refused: <reason>"."""
    seqs, held = m.ArrivalSeq(), m.HeldValues(mp.hold_s)
    msgs, out = [], []
    for topic, payload, arrived in messages:
        msgs.append({"topic": topic, "payload": payload, "arrived": arrived})
        r = m.apply(mp, topic, payload.encode(), arrived, arrival_seq=seqs, held=held)
        out.append(r.to_json().decode() if isinstance(r, telemetry.Reading) else f"refused: {r.reason}")
    SEQUENCES.append({"name": name, "mapping": mp.model_dump(mode="json"), "messages": msgs, "records": out})


# ---- arrival-time seqs: strictly increasing per device within one ms
same_ms = [1_765_015_300.0001, 1_765_015_300.0002, 1_765_015_300.0003, 1_765_015_300.002, 1_765_015_299.5]
zigbee = json.dumps(dp.ZIGBEE)
sequence("zigbee2mqtt arrivals", Z, [(t, zigbee, a) for t, a in zip([ZT, ZT, "zigbee2mqtt/other", ZT, ZT], same_ms)])

# ---- one value per topic merged into readings by time: each channel's last value within hold_s
T0 = ARRIVED
sequence(
    "esphome channels held",
    mapping("esphome", hold_s=60),
    [
        ("kitchen/sensor/temperature/state", "21.5", T0),
        ("kitchen/sensor/humidity/state", "48", T0 + 1),
        ("hall/sensor/temperature/state", "19", T0 + 1.0004),
        ("kitchen/sensor/temperature/state", "21.7", T0 + 2),
        ("kitchen/sensor/status/state", "online", T0 + 3),  # refused: no number, nothing held changes
        ("kitchen/sensor/pressure/state", "NaN", T0 + 4),  # refused
        ("kitchen/sensor/humidity/state", "49", T0 + 2.0001),  # earlier than the last arrival: seq still grows
        ("kitchen/sensor/power/state", '{"apower": 3.5, "on": true}', T0 + 30),
        ("kitchen/sensor/temperature/state", "22", T0 + 62.5),  # humidity (T0 + 2.0001) is older than 60 s now
        ("hall/sensor/temperature/state", "19.5", T0 + 62),  # hall's first value too
    ],
)
many = mapping("esphome")
sequence(
    "esphome channels held up to the limit",
    many,
    [(f"rack/sensor/c{i}/state", str(i), T0 + i / 10) for i in range(telemetry.MAX_CHANNELS + 2)],
)

doc = {
    "comment": (
        "Shared by tests/unit/repo/test_mapping_vectors.py (Python: streamtrain.ingest_mapping.apply) and the HiveMQ "
        "extension's IngestMappingTest (Java); written by build_mapping_vectors.py from the Python implementation. "
        "A case: a mapping (every field), topic, payload (text, or payload_hex), arrived (epoch s: the arrival "
        "time, applied with a fresh ArrivalSeq), optional max_bytes and known_devices, subscribed (the mapping's "
        "MQTT subscriptions deliver the topic), then record (the exact raw-topic value) or reason and detail "
        "(Python's wording; Java's may differ). sequences: messages applied in order with one ArrivalSeq and one "
        "HeldValues, each giving its record or 'refused: <reason>'."
    ),
    "cases": CASES,
    "sequences": SEQUENCES,
}
if __name__ == "__main__":
    with open(sys.argv[1], "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write("\n")
    print(len(CASES), "cases", sum("record" in c for c in CASES), "records", len(SEQUENCES), "sequences")
