"""The ingestion mapping per preset: recorded payloads -> readings (device, channels, ts, identity),
and non-matching input -> its reason.

The HiveMQ extension's presets resource is generated from ``PRESETS``: stale means `make ingest-presets`."""

from __future__ import annotations

import json

import pytest

from streamtrain import ingest_mapping, telemetry
from streamtrain.ingest_mapping import (
    PRESETS,
    ArrivalSeq,
    HeldValues,
    IngestMapping,
    apply,
    fingerprint,
    load_mapping,
)
from tests.conftest import REPO
from tests.ingest import device_payloads as p


def _apply(preset: str, topic: str, payload, **kw):
    body = payload if isinstance(payload, bytes) else p.encode(payload)
    return apply(PRESETS[preset], topic, body, p.ARRIVED, **kw)


def test_zigbee2mqtt_flat_payload_arrival_time_and_ms_seq():
    r = _apply("zigbee2mqtt", p.ZIGBEE_TOPIC, p.ZIGBEE)
    assert isinstance(r, telemetry.Reading), r
    assert r.device_id == "kitchen-sensor"
    assert r.channels == p.ZIGBEE_CHANNELS
    assert r.ts == p.ARRIVED
    assert r.seq == round(p.ARRIVED * 1000)
    assert PRESETS["zigbee2mqtt"].subscriptions == ["zigbee2mqtt/+"]


def test_zigbee2mqtt_arrival_seqs_increase_within_one_millisecond():
    clock = ArrivalSeq()
    seqs = [_apply("zigbee2mqtt", p.ZIGBEE_TOPIC, p.ZIGBEE, arrival_seq=clock).seq for _ in range(3)]
    assert seqs == [round(p.ARRIVED * 1000) + i for i in range(3)]


def test_zigbee2mqtt_bridge_state_and_string_only_payloads():
    assert _apply("zigbee2mqtt", "zigbee2mqtt/bridge/state", {"state": "online"}).reason == "bad_topic"
    # A wireless switch publishes only an action: no number, nothing to learn from.
    assert _apply("zigbee2mqtt", "zigbee2mqtt/switch-1", {"action": "single"}).reason == "missing_field"
    assert _apply("zigbee2mqtt", "zigbee2mqtt/kitchen sensor", p.ZIGBEE).reason == "bad_topic"


def test_tasmota_nested_payload_local_time():
    r = _apply("tasmota", p.TASMOTA_TOPIC, p.TASMOTA)
    assert isinstance(r, telemetry.Reading), r
    assert r.device_id == "plug-1"
    assert r.channels == p.TASMOTA_CHANNELS
    assert r.ts == p.TASMOTA_TS
    assert r.seq == round(p.TASMOTA_TS * 1000)
    # Same payload, same identity: a redelivery is recognisable.
    assert _apply("tasmota", p.TASMOTA_TOPIC, p.TASMOTA).seq == r.seq


def test_tasmota_time_zone_assumed_from_the_mapping():
    berlin = PRESETS["tasmota"].model_copy(update={"ts_timezone": "Europe/Berlin"})
    r = apply(berlin, p.TASMOTA_TOPIC, p.encode(p.TASMOTA), p.ARRIVED)
    assert r.ts == p.TASMOTA_TS - 3600  # 10:15 in Berlin in December is 09:15 UTC
    explicit = apply(berlin, p.TASMOTA_TOPIC, p.encode({**p.TASMOTA, "Time": "2026-12-06T10:15:00Z"}), p.ARRIVED)
    assert explicit.ts == p.TASMOTA_TS


def test_tasmota_refusals():
    assert _apply("tasmota", "tele/plug-1/STATE", p.TASMOTA).reason == "bad_topic"
    assert _apply("tasmota", p.TASMOTA_TOPIC, {**p.TASMOTA, "Time": "yesterday"}).reason == "wrong_type"
    no_time = {k: v for k, v in p.TASMOTA.items() if k != "Time"}
    assert _apply("tasmota", p.TASMOTA_TOPIC, no_time).reason == "missing_field"
    assert _apply("tasmota", p.TASMOTA_TOPIC, b'{"Time":"2026-12-06T10:15:00","ENERGY":{"Power":NaN}}').reason == (
        "non_finite"
    )


def test_cloud_device_from_payload_ms_timestamp_nested_telemetry():
    r = _apply("cloud", p.CLOUD_TOPIC, p.CLOUD)
    assert isinstance(r, telemetry.Reading), r
    assert r.device_id == "dev-7"
    assert r.channels == p.CLOUD_CHANNELS  # firmware is outside telemetry
    assert r.ts == 1_765_015_200.123
    assert r.seq == 1_765_015_200_123
    assert PRESETS["cloud"].subscriptions == ["+/+/data"]


def test_cloud_refusals():
    assert _apply("cloud", "fleet-a/dev-9/data", p.CLOUD).reason == "topic_mismatch"
    assert _apply("cloud", p.CLOUD_TOPIC, {**p.CLOUD, "deviceId": 7}).reason == "wrong_type"
    assert _apply("cloud", p.CLOUD_TOPIC, {**p.CLOUD, "timestamp": "soon"}).reason == "wrong_type"
    assert _apply("cloud", p.CLOUD_TOPIC, {k: v for k, v in p.CLOUD.items() if k != "telemetry"}).reason == (
        "missing_field"
    )
    assert _apply("cloud", p.CLOUD_TOPIC, b"{oops").reason == "malformed_json"
    assert _apply("cloud", p.CLOUD_TOPIC, b"[1]").reason == "not_an_object"
    assert _apply("cloud", p.CLOUD_TOPIC, b"x" * 20000).reason == "oversized"
    assert _apply("cloud", p.CLOUD_TOPIC, p.CLOUD, known_devices=frozenset({"dev-1"})).reason == "unknown_device"


def test_streamtrain_preset_is_todays_validator():
    body = p.encode(p.STREAMTRAIN)
    r = _apply("streamtrain", p.STREAMTRAIN_TOPIC, body)
    assert r == telemetry.validate(body, p.STREAMTRAIN_TOPIC)
    assert (r.device_id, r.ts, r.seq) == ("dev-8", 1_765_015_200.25, 17)
    no_seq = {k: v for k, v in p.STREAMTRAIN.items() if k != "seq"}
    assert _apply("streamtrain", p.STREAMTRAIN_TOPIC, no_seq).reason == "missing_field"
    assert _apply("streamtrain", "zigbee2mqtt/x", body).reason == "bad_topic"
    assert PRESETS["streamtrain"].subscriptions == ["devices/+/telemetry"]
    assert not PRESETS["streamtrain"].derives_seq


def test_streamtrain_preset_agrees_with_the_shared_vectors():
    from tests.unit.repo.test_telemetry_vectors import VECTORS, _payload

    for case in VECTORS["cases"]:
        known = frozenset(case["known_devices"]) if "known_devices" in case else None
        got = apply(
            PRESETS["streamtrain"],
            case["topic"],
            _payload(case),
            p.ARRIVED,
            max_bytes=case.get("max_bytes", telemetry.MAX_PAYLOAD_BYTES),
            known_devices=known,
        )
        want = telemetry.validate(
            _payload(case),
            case["topic"],
            max_bytes=case.get("max_bytes", telemetry.MAX_PAYLOAD_BYTES),
            known_devices=known,
        )
        assert got == want, case["name"]


def test_custom_mapping_from_yaml_renames_includes_and_takes_seq(tmp_path):
    f = tmp_path / "plant.yaml"
    f.write_text(
        "topics: ['site/{site}/{device_id}/metrics', 'legacy/{device_id}']\n"
        "ts_path: meta.t\nts_format: s\nseq_path: meta.n\n"
        "include: ['pump_*', 'temp']\nexclude: ['pump_debug']\nrename: {pump_rpm: rpm}\n"
    )
    m = load_mapping(str(f))
    assert m.name == "plant"
    assert m.subscriptions == ["site/+/+/metrics", "legacy/+"]
    body = p.encode({"meta": {"t": 100.5, "n": 9}, "pump": {"rpm": 10, "debug": 1}, "temp": 20, "other": 3})
    r = apply(m, "site/north/p-1/metrics", body, p.ARRIVED)
    assert (r.device_id, r.ts, r.seq, r.channels) == ("p-1", 100.5, 9, {"rpm": 10.0, "temp": 20.0})
    assert apply(m, "legacy/p-1", body, p.ARRIVED).device_id == "p-1"
    assert not m.derives_seq
    bad_seq = p.encode({"meta": {"t": 1, "n": -1}, "temp": 1})
    assert apply(m, "legacy/p-1", bad_seq, p.ARRIVED).reason == "wrong_type"


def test_yaml_preset_with_overrides(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("preset: tasmota\nts_timezone: America/New_York\ntopics: ['home/tele/{device_id}/SENSOR']\n")
    m = load_mapping(str(f))
    assert m.ts_path == "Time" and m.ts_timezone == "America/New_York"
    assert m.match_topic("home/tele/plug-2/SENSOR") == {"device_id": "plug-2"}


@pytest.mark.parametrize(
    "fields",
    [
        {"topics": ["tele/{device}/SENSOR"]},  # no device id anywhere
        {"topics": ["tele/x{device_id}/SENSOR"]},
        {"topics": ["tele/#"]},
        {"topics": []},
        {"ts_timezone": "Mars/Olympus"},
        {"format": "streamtrain", "topics": ["x/{device_id}"]},
        {"unknown": 1},
    ],
)
def test_invalid_mappings_are_refused(fields):
    with pytest.raises(ValueError):
        IngestMapping.model_validate({"topics": ["a/{device_id}"], **fields})


def test_unknown_preset_or_file():
    with pytest.raises(ValueError, match="neither a preset"):
        load_mapping("no-such-preset")


def test_reserved_channel_name_and_non_numeric_refuse():
    m = IngestMapping(topics=["a/{device_id}"], non_numeric="refuse", rename={"x": "seq"})
    assert apply(m, "a/d", p.encode({"x": 1}), 0.0).reason == "wrong_type"
    assert apply(m, "a/d", p.encode({"y": "warm"}), 0.0).reason == "wrong_type"


def test_fingerprint_is_topic_and_payload():
    assert fingerprint("a/b", b"{}") == fingerprint("a/b", b"{}")
    assert fingerprint("a/b", b"{}") != fingerprint("a/c", b"{}")
    assert len(json.dumps(fingerprint("a", b""))) < 40


def test_channel_names_are_snake_case_unless_kept_or_renamed():
    from streamtrain.ingest_mapping import snake_case

    assert snake_case("ENERGY_ApparentPower") == "energy_apparent_power"
    assert snake_case("AM2301_DewPoint") == "am2301_dew_point"
    assert snake_case("co2-level") == "co2_level"
    m = IngestMapping(topics=["a/{device_id}"], names="keep", rename={"X": "x_renamed"})
    assert apply(m, "a/d", p.encode({"Temp": 1, "X": 2}), 0.0).channels == {"Temp": 1.0, "x_renamed": 2.0}


def test_one_value_topics_take_no_payload_paths_and_need_the_device_level():
    assert PRESETS["esphome"].one_value_per_topic and PRESETS["esphome"].subscriptions == ["+/sensor/+/state"]
    assert not PRESETS["zigbee2mqtt"].one_value_per_topic
    for field in ("ts_path", "seq_path", "channels_root", "device_id_path"):
        with pytest.raises(ValueError, match=f"take no {field}"):
            IngestMapping(topics=["{device_id}/{channel}"], **{field: "x"})
    with pytest.raises(ValueError, match="no {device_id} level"):
        IngestMapping(topics=["sensors/{channel}"])


def test_held_values_expire_after_hold_s_and_are_restored_no_older_than_they_were():
    held = HeldValues(hold_s=10, max_devices=2)
    assert held.merge("a", 100.0, {"t": 1.0}) == {"t": 1.0}
    assert held.merge("a", 105.0, {"h": 2.0}) == {"t": 1.0, "h": 2.0}
    assert held.merge("a", 110.5, {"h": 3.0}) == {"h": 3.0}  # t is 10.5 s old
    # Restored from the raw topic in order: t kept its value from 200 to 208, so it is held since 200.
    restored = HeldValues(hold_s=10)
    restored.restore("a", 200.0, {"t": 1.0})
    restored.restore("a", 208.0, {"t": 1.0, "h": 2.0})
    assert restored.merge("a", 210.5, {"x": 0.0}) == {"h": 2.0, "x": 0.0}
    held.merge("b", 1.0, {"t": 1.0})
    held.merge("c", 1.0, {"t": 1.0})  # a, the least recently heard, is forgotten
    assert set(held.devices) == {"b", "c"}


def test_an_inline_json_mapping_reads_like_a_mapping_file():
    changed = load_mapping('{"preset": "tasmota", "ts_timezone": "Europe/Berlin"}')
    assert changed == PRESETS["tasmota"].model_copy(update={"ts_timezone": "Europe/Berlin"})
    own = load_mapping(' {"topics": ["plant/{device_id}"], "ts_path": "t"}')
    assert (own.name, own.format, own.ts_path, own.subscriptions) == ("inline", "json", "t", ["plant/+"])
    with pytest.raises(ValueError, match=r"ingest mapping \(inline\): not YAML/JSON"):
        load_mapping('{"ts_path": ')
    with pytest.raises(ValueError, match="unknown preset 'modbus'"):
        load_mapping('{"preset": "modbus"}')
    with pytest.raises(ValueError, match="an inline JSON object"):
        load_mapping("no-such-preset")


def test_presets_resource_is_fresh():
    written = (REPO / ingest_mapping.PRESETS_RESOURCE).read_text()
    assert written == ingest_mapping.presets_json(), "stale: run `make ingest-presets`"


def test_presets_resource_holds_every_preset_in_full():
    presets = json.loads(ingest_mapping.presets_json())["presets"]
    assert list(presets) == list(ingest_mapping.PRESETS)
    for name, fields in presets.items():
        assert ingest_mapping.IngestMapping.model_validate(fields) == ingest_mapping.PRESETS[name]
        assert set(fields) == set(ingest_mapping.IngestMapping.model_fields)
