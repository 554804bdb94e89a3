"""The batch step's feature records (streamtrain.preprocessing.batch.FeatureRecords): msgspec structs written
exactly as the engine's features dict, whatever pass-through fields a reading carries.

The embedded engine's per-device state (open windows, sequence histories) rebuilt from what an
earlier owner committed: continuing on a rebuilt engine gives exactly the outputs of one engine.

Hostile input, raw records through the preprocessing engine: whatever arrives, the answer is a value or a typed, explained refusal, never
anything else raised (strategies in tests/unit/hostile.py)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtrain.preprocessing.batch import BatchExpressions
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec, Sequences
from tests.unit.hostile import (
    FAST,
    FIELDS,
    json_values,
)
from tests.unit.streamtrain.preprocessing.specs import VECTORISED
from tests.unit.streamtrain.preprocessing.test_ksql import simulated

BASE = {
    "device_id": "d-1",
    "ts": 1796668599.25,
    "seq": 3,
    "temperature": 71.5,
    "current": 2.25,
}
BASE |= {"vibration": 0.5, "pressure": 4.0}


@pytest.mark.parametrize(
    "extra",
    [
        {"device_type": "pump", "label": 0, "anomaly": None},
        {"label": 1},  # some pass-through fields missing
        {},
        {"anomaly": "spike", "note": "not passed through", "device_type": "fan"},
    ],
)
@pytest.mark.parametrize(
    "spec",
    [PreprocessSpec.default(), VECTORISED.model_copy(update={"sequences": None})],
)
def test_a_struct_is_written_as_the_engine_writes_its_dict(spec, extra):
    record = {**BASE, **extra}
    (derived,) = BatchExpressions(spec).evaluate([record])
    assert isinstance(derived, list)
    as_dict = Engine(spec).process_evaluated(record, derived).features
    as_struct = Engine(spec).process_evaluated(record, derived, True).features
    assert not isinstance(as_struct, dict)
    assert msgspec.json.encode(as_struct) == msgspec.json.encode(as_dict)


def test_windows_agree_when_fed_structs_or_dicts():
    spec = PreprocessSpec.default()
    by_dict, by_struct = Engine(spec), Engine(spec)
    for i in range(25):
        record = {
            **BASE,
            "seq": i,
            "ts": BASE["ts"] + i * 0.9,
            "temperature": 60.0 + i / 4,
        }
        (derived,) = BatchExpressions(spec).evaluate([record])
        a, b = (
            by_dict.process_evaluated(record, derived),
            by_struct.process_evaluated(record, derived, True),
        )
        assert (a.windows, a.late) == (b.windows, b.late)
    assert by_dict.flush() == by_struct.flush()


@pytest.mark.parametrize("label", ["\n", 'say "x"', "back\\slash"])
def test_a_label_msgspec_cannot_rename_to_keeps_the_dict(label):
    """msgspec refuses a renamed field whose name holds a quote, a backslash or a control character: such a
    spec compiles, and its records are the engine's dicts (found by tests/unit/repo/test_parsers.py)."""
    spec = PreprocessSpec.default().model_copy(update={"label": label})
    record = {**BASE, label: 1}
    (derived,) = BatchExpressions(spec).evaluate([record])
    engine = Engine(spec)
    features = engine.process_evaluated(record, derived, True).features
    assert isinstance(features, dict) and features[label] == 1
    assert msgspec.json.encode(features) == msgspec.json.encode(
        Engine(spec).process_evaluated(record, derived).features
    )


def spec() -> PreprocessSpec:
    return PreprocessSpec.default().model_copy(update={"sequences": Sequences(length=4)})


def run(engine: Engine, records: list[dict]) -> tuple[list, list, list]:
    features, windows, sequences = [], [], []
    for r in records:
        res = engine.process(r)
        if res.features:
            features.append(res.features)
        windows += res.windows
        sequences += res.sequences
    return features, windows, sequences


def test_an_engine_rebuilt_from_committed_outputs_continues_exactly_like_one_engine():
    records = simulated(4, 80, seed=7)
    whole = run(Engine(spec()), records)
    cut = len(records) // 2 + 3
    first = Engine(spec())
    before = run(first, records[:cut])
    successor = Engine(spec())
    for w in before[1]:
        successor.emitted(w)
    for f in before[0]:
        successor.restore(f)
    after = run(successor, records[cut:])
    assert before[1] and before[2]  # the first owner emitted windows and sequences to rebuild from
    for i, what in enumerate(("features", "windows", "sequences")):
        assert before[i] + after[i] == whole[i], what


def test_a_window_flushed_at_a_stop_is_not_emitted_again_by_the_next_owner():
    records = simulated(2, 40, seed=3)
    first = Engine(spec())
    features, windows, _ = run(first, records[:41])
    flushed = first.flush()
    successor = Engine(spec())
    for w in windows + flushed:
        successor.emitted(w)
    for f in features:
        successor.restore(f)
    _, later, _ = run(successor, records[41:])
    later += successor.flush()
    keys = [(w["device_id"], w["window_start_ms"]) for w in windows + flushed + later]
    assert flushed and len(keys) == len(set(keys))


def test_forgotten_devices_start_over():
    engine = Engine(spec())
    run(engine, simulated(2, 10, seed=1))
    assert engine.open and engine.history
    engine.forget(["d0", "d1"])
    assert not engine.open and not engine.history and not engine.closed


@FAST
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(FIELDS + ["vibration", "pressure"]),
            json_values,
            max_size=10,
        ),
        max_size=15,
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
