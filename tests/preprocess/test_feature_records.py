"""The batch step's feature records (streamtrain.preprocessing.batch.FeatureRecords): msgspec structs written
exactly as the engine's features dict, whatever pass-through fields a reading carries."""

from __future__ import annotations

import msgspec
import pytest

from streamtrain.preprocessing.batch import BatchExpressions
from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec
from tests.preprocess.specs import VECTORISED

BASE = {"device_id": "d-1", "ts": 1796668599.25, "seq": 3, "temperature": 71.5, "current": 2.25}
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
@pytest.mark.parametrize("spec", [PreprocessSpec.default(), VECTORISED.model_copy(update={"sequences": None})])
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
        record = {**BASE, "seq": i, "ts": BASE["ts"] + i * 0.9, "temperature": 60.0 + i / 4}
        (derived,) = BatchExpressions(spec).evaluate([record])
        a, b = by_dict.process_evaluated(record, derived), by_struct.process_evaluated(record, derived, True)
        assert (a.windows, a.late) == (b.windows, b.late)
    assert by_dict.flush() == by_struct.flush()


@pytest.mark.parametrize("label", ["\n", 'say "x"', "back\\slash"])
def test_a_label_msgspec_cannot_rename_to_keeps_the_dict(label):
    """msgspec refuses a renamed field whose name holds a quote, a backslash or a control character: such a
    spec compiles, and its records are the engine's dicts (found by tests/hostile/test_parsers.py)."""
    spec = PreprocessSpec.default().model_copy(update={"label": label})
    record = {**BASE, label: 1}
    (derived,) = BatchExpressions(spec).evaluate([record])
    engine = Engine(spec)
    features = engine.process_evaluated(record, derived, True).features
    assert isinstance(features, dict) and features[label] == 1
    assert msgspec.json.encode(features) == msgspec.json.encode(
        Engine(spec).process_evaluated(record, derived).features
    )
