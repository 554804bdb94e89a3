"""Property tests of every parser and decoder that reads input from outside: whatever arrives,
each one answers with a value or a typed, explained refusal, and never raises anything else.

Telemetry payloads (bridge), feature records (scorer), raw records (preprocessing engine),
CSV replay files (simulator), preprocessing specs (files and resources) and model records on
the models topic (scorer's model watcher)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import string
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streamtrain import telemetry
from streamtrain.modelcodec import FORMAT_VERSION, ModelAssembler, ModelRejected, ModelVersion, encode
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec, SpecError
from streamtrain.simulator.publish import CsvReplayConfig, read_csv_rows

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- generators
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
device_ids = st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z"), st.text(max_size=70))
FIELDS = ["device_id", "ts", "seq", "temperature", "current", "label", "anomaly", "device_type"]
almost_readings = st.fixed_dictionaries(
    {
        "device_id": device_ids,
        "ts": st.one_of(st.floats(), st.integers(), scalars),
        "seq": st.one_of(st.integers(), scalars),
    },
    optional={
        "temperature": st.one_of(st.floats(), json_values),
        "current": st.floats(),
        "label": scalars,
        "anomaly": scalars,
        "device_type": scalars,
        "extra": json_values,
    },
)


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


def dumps(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


# ---------------------------------------------------------------- telemetry
def check_telemetry(payload: bytes, topic: str | None):
    result = telemetry.validate(payload, topic)
    if isinstance(result, telemetry.Rejection):
        assert result.reason in telemetry.REASONS and result.detail
        return result
    assert isinstance(result, telemetry.Reading)
    assert all(math.isfinite(v) for v in result.channels.values())
    assert not set(result.channels) & telemetry.RESERVED
    again = telemetry.validate(result.to_json(), topic)  # what the bridge forwards is valid again
    assert again == result
    return result


@FAST
@given(st.binary(max_size=2000))
@example(deep(8000))
@example(b'{"device_id":"a","ts":1,"seq":0,"x":' + deep(5000) + b"}")
@example(b"\xff\xfe{}")
def test_any_bytes_are_a_reading_or_a_reasoned_rejection(payload):
    check_telemetry(payload, "devices/dev-1/telemetry")


@FAST
@given(almost_readings, st.one_of(st.none(), st.text(max_size=40), device_ids.map(lambda d: f"devices/{d}/telemetry")))
def test_structured_nearly_valid_readings_never_raise(obj, topic):
    check_telemetry(dumps(obj), topic)


def test_deeply_nested_json_is_malformed_not_a_crash():
    r = telemetry.validate(deep(8000), "devices/dev-1/telemetry")
    assert isinstance(r, telemetry.Rejection) and r.reason == "malformed_json" and "nested" in r.detail


# ---------------------------------------------------------------- scorer's feature records
@FAST
@given(
    st.lists(
        st.one_of(st.binary(max_size=200), json_values.map(dumps), almost_readings.map(dumps), st.just(deep(5000))),
        max_size=20,
    )
)
def test_scorer_decode_splits_every_record_into_scorable_or_dead_letter(values):
    from streamtrain.model import LoadedModel
    from streamtrain.scorer.records import BatchDecoder

    # Decoding needs the model's inputs only, not its network.
    model = LoadedModel(None, {"version": 1, "feature_names": ["temperature", "current"], "threshold": 1.0})
    msgs = [SimpleNamespace(value=lambda v=v: v) for v in values]
    decoded = BatchDecoder(model).decode(msgs)
    x, keep, bad = decoded.x, decoded.keep, decoded.bad
    assert len(keep) + len(bad) == len(msgs)
    assert x.shape == (len(keep), 2) and bool((abs(x) < math.inf).all())
    assert all(
        reason in ("malformed_json", "missing_feature", "bad_feature_value") and detail for _, reason, detail in bad
    )


# ---------------------------------------------------------------- preprocessing engine
@FAST
@given(
    st.lists(
        st.dictionaries(st.sampled_from(FIELDS + ["vibration", "pressure"]), json_values, max_size=10), max_size=15
    )
)
def test_engine_answers_every_record_with_features_filtered_or_an_error(records):
    engine = Engine(PreprocessSpec.default())
    for record in records:
        record.setdefault("device_id", "dev-1")
        record.setdefault("ts", 1.0)
        try:
            result = engine.process(record)
        except Exception as exc:  # noqa: BLE001 - the property under test
            pytest.fail(f"engine raised {exc!r} on {record!r}")
        assert result.filtered or result.error is not None or result.features is not None
        if result.error is not None:
            assert result.error.reason


# ---------------------------------------------------------------- preprocessing specs
GOOD_SPEC = {
    "filter": "temperature > -50 AND temperature < 200",
    "features": ["temperature", "current"],
    "derived": [{"name": "power", "expr": "current * temperature"}],
    "windows": {"size_seconds": 10, "aggregates": [{"name": "t_avg", "fn": "avg", "field": "temperature"}]},
}
sql_fragments = st.text(alphabet=string.ascii_letters + string.digits + " ()+-*/<>=!'\".,;_%|&^~`$#@?\\\n", max_size=60)


def spec_or_refusal(data):
    try:
        spec = PreprocessSpec.model_validate(data)
    except (SpecError, ValidationError) as exc:
        assert str(exc)
        return None
    Engine(spec)  # a spec that validates must also compile
    return spec


@FAST
@given(json_values)
def test_any_document_is_a_spec_or_a_clear_refusal(data):
    spec_or_refusal(data)


@FAST
@given(st.sampled_from(["filter", "derived", "windows", "features", "label"]), st.one_of(sql_fragments, json_values))
def test_mutated_specs_are_valid_or_refused(key, value):
    data = json.loads(json.dumps(GOOD_SPEC))
    if key == "derived" and isinstance(value, str):
        value = [{"name": "power", "expr": value}]
    data[key] = value
    spec_or_refusal(data)


@pytest.mark.parametrize("depth", [10, 70, 3000])
def test_deep_expressions_are_refused_or_compiled_never_a_crash(depth):
    spec_or_refusal({"features": ["temperature"], "filter": "(" * depth + "temperature > 1" + ")" * depth})
    spec_or_refusal({"features": ["temperature"], "derived": [{"name": "d", "expr": "-" * depth + "temperature"}]})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=400),
        st.text(max_size=400).map(str.encode),
        json_values.map(lambda v: yaml.safe_dump(v).encode()),
    )
)
def test_spec_files_of_any_content_load_or_fail_with_a_value_error(tmp_path, content):
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    try:
        PreprocessSpec.load(path)
    except ValueError as exc:  # SpecError and pydantic's ValidationError are ValueErrors
        assert str(exc)


# ---------------------------------------------------------------- CSV replay
def write_csv(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "replay.csv"
    path.write_bytes(content)
    return path


def check_csv(path: Path, **cfg):
    try:
        rows = read_csv_rows(CsvReplayConfig(path, **cfg, speed=0))
    except ValueError as exc:
        assert str(path) in str(exc) or "--device" in str(exc)
        return None
    for device, msg in rows:  # every row the replay would publish, the bridge accepts
        assert isinstance(
            telemetry.validate(json.dumps(msg).encode(), f"devices/{device}/telemetry"), telemetry.Reading
        )
    return rows


cells = st.one_of(
    st.text(max_size=12),
    st.floats().map(str),
    st.integers().map(str),
    st.sampled_from(["2024-03-01T10:00:00Z", "nan", "inf", "", "1e999", "9" * 30]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(cells, min_size=0, max_size=6), max_size=12),
    st.sampled_from(
        [{"device_column": "machine"}, {"device_id": "pump-1"}, {"device_column": "machine", "label_column": "label"}]
    ),
)
def test_csv_tables_of_any_cells_replay_or_fail_with_the_line(tmp_path, table, cfg):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["timestamp", "machine", "temp", "label", "seq"])
    for row in table:
        w.writerow(row)
    check_csv(write_csv(tmp_path, buf.getvalue().encode("utf-8", "surrogatepass")), **cfg)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=500))
@example(b"timestamp,temp\n1,\x00\n")
@example(b"timestamp,temp\n\xff\xfe,1\n")
@example(b'timestamp,temp\n"unterminated,1\n')
def test_csv_files_of_any_bytes_replay_or_fail_with_a_value_error(tmp_path, content):
    check_csv(write_csv(tmp_path, content), device_id="pump-1")


# ---------------------------------------------------------------- model records
META = {
    "version": 3,
    "feature_names": ["a", "b"],
    "threshold": 0.5,
    "format": "keras-v3",
    "normalization": {"mean": [0.0, 0.0], "std": [1.0, 1.0]},
}
REASONS = {
    "bad_key",
    "too_large",
    "bad_metadata",
    "incompatible",
    "truncated",
    "checksum",
    "not_a_model",
    "load_failed",
    "bad_control",
    "bad_record",
}


def manifest(artefact: bytes, chunks: int, **changes) -> bytes:
    body = {
        "codec": FORMAT_VERSION,
        "sha256": hashlib.sha256(artefact).hexdigest(),
        "size": len(artefact),
        "chunks": chunks,
        "metadata": META,
    }
    body.update(changes)
    return json.dumps(body).encode()


hostile_manifests = st.one_of(
    st.binary(max_size=100),
    json_values.map(dumps),
    st.builds(
        lambda a, n, c: manifest(a, n, codec=c),
        st.binary(max_size=50),
        st.integers(0, 3),
        st.one_of(st.integers(), scalars),
    ),  # wrong version of the codec
    st.builds(lambda a, s: manifest(a, 1, size=s), st.binary(max_size=50), st.one_of(st.integers(), scalars)),
    st.builds(lambda a, m: manifest(a, 1, metadata=m), st.binary(max_size=50), json_values),
    st.builds(lambda a, n: manifest(a, n), st.binary(max_size=50), st.integers(-5, 10**9)),  # huge/negative counts
    st.just(manifest(b"", 1, size=10**12)),
)


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(
                    [
                        b"model/3/manifest",
                        b"model/3/chunk/0",
                        b"model/3/chunk/1",
                        b"model/999999999/chunk/999999",
                        b"control/promote",
                    ]
                ),
                st.binary(max_size=30),
            ),
            st.one_of(st.none(), hostile_manifests),
        ),
        max_size=12,
    )
)
@example([(b"model/3/manifest", manifest(b"", 1, size=float("inf")))])
def test_model_records_assemble_or_are_refused_with_a_reason(records):
    asm = ModelAssembler()
    for key, value in records:
        if key.startswith(b"control/"):
            continue
        try:
            asm.add(key, value)
        except ModelRejected as exc:
            assert exc.reason in REASONS and exc.detail


@FAST
@given(st.binary(min_size=1, max_size=3000), st.data())
def test_truncated_or_altered_versions_never_assemble(artefact, data):
    records = encode(artefact, META)
    how = data.draw(st.sampled_from(["drop_chunk", "cut_chunk", "flip_byte", "wrong_key_version"]))
    key, value = records[0]
    if how == "drop_chunk":
        records = records[1:]
    elif how == "cut_chunk":
        records[0] = (key, value[: data.draw(st.integers(0, len(value) - 1))])
    elif how == "flip_byte":
        i = data.draw(st.integers(0, len(value) - 1))
        records[0] = (key, value[:i] + bytes([value[i] ^ 0xFF]) + value[i + 1 :])
    else:
        records = [(k.replace(b"model/3/", b"model/4/"), v) for k, v in records]
    asm = ModelAssembler()
    with pytest.raises(ModelRejected) as info:
        for k, v in records:
            assert asm.add(k, v) is None
    assert info.value.reason in {"truncated", "checksum", "bad_metadata"}


def keras_like_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", "{not a keras config")
    return buf.getvalue()


@FAST
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={k: json_values for k in META}),
        st.builds(lambda m, k, v: {**m, k: v}, st.just(META), st.sampled_from(sorted(META)), json_values),
    ),
    st.sampled_from([b"", b"not a model", b"PK\x03\x04truncated zip"]),
)
def test_loaded_model_refuses_bad_metadata_and_non_models_with_a_reason(meta, artefact):
    from streamtrain.model import LoadedModel

    assume(isinstance(meta, dict))
    with pytest.raises(ModelRejected) as info:
        LoadedModel.from_version(ModelVersion(meta, artefact))
    assert info.value.reason in REASONS


def test_a_zip_that_is_not_a_keras_model_is_refused_as_load_failed():
    from streamtrain.model import LoadedModel

    with pytest.raises(ModelRejected) as info:
        LoadedModel.from_version(ModelVersion(META, keras_like_zip()))
    assert info.value.reason == "load_failed"


# ---------------------------------------------------------------- the model watcher keeps serving
class _Champion:
    version = 1


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.binary(max_size=30),
                st.sampled_from([b"model/2/manifest", b"model/2/chunk/0", b"control/promote", b"control/other"]),
            ),
            st.one_of(st.none(), hostile_manifests, json_values.map(dumps)),
        ),
        max_size=12,
    ),
    st.binary(max_size=200),
)
def test_hostile_model_records_never_change_the_serving_model(records, artefact):
    from streamtrain.scorer.models import ModelRegistry, ModelWatcher

    registry = ModelRegistry(challenger_mode=False)
    registry.champion = champion = _Champion()
    refused: list[str] = []
    watcher = ModelWatcher("unused:9092", "models", registry, refused.append, stop_event=None)
    watcher.caught_up.set()
    asm = ModelAssembler()
    # Well-formed envelopes around garbage too: they pass the codec and must fail at loading.
    records = records + [(k, v) for k, v in encode(artefact, {**META, "version": 2})]
    for key, value in records:
        watcher.handle(asm, [], key, value)
    assert all(event != "champion_switched" for event, _, _ in registry.apply())
    assert registry.champion is champion
    assert refused and all(r in REASONS for r in refused)
