"""The scorer's batch decoder (scorer/records.py): its msgspec fast path keeps, refuses and passes
through exactly what the reference path (json.loads + LoadedModel.extract, one record at a time)
does, for the same reasons, whatever the batch mixes; and score records keep their fields.

Hostile input, feature records as the scorer decodes them: whatever arrives, the answer is a value or a typed, explained refusal, never
anything else raised (strategies in tests/unit/hostile.py)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtrain.model import LoadedModel
from streamtrain.scorer.records import UNSET, BatchDecoder, score_records
from tests.unit.hostile import (
    FAST,
    almost_readings,
    deep,
    dumps,
    json_values,
)

FEATURES = [
    "temperature",
    "vib.rms",
    "ts",
]  # a dotted name, and one that collides with a passed-through field


class Msg:
    """What the decoder reads of a consumed record (confluent_kafka.Message has no public constructor)."""

    def __init__(self, value, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self):
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def key(self):
        return b"k"


def model() -> LoadedModel:
    return LoadedModel(None, {"version": 1, "feature_names": FEATURES, "threshold": 1.0})


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**40), 10**40),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
    st.just(3.5e38),
    st.just(-3.4e38),
)
passthrough = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def values(draw):
    kind = draw(st.sampled_from(["good", "good", "good", "mixed", "garbage", "none", "array", "newline"]))
    if kind == "garbage":
        return draw(
            st.sampled_from(
                [
                    b"{not json",
                    b"",
                    b"\xff\xfe",
                    b"[1, 2]",
                    b"42",
                    b"NaN",
                    b'{"a": 1}{"b": 2}',
                ]
            )
        )
    if kind == "none":
        return None
    body = {f: draw(st.floats(-1e6, 1e6, allow_nan=False)) for f in FEATURES}
    if kind == "mixed":
        for f in draw(st.sets(st.sampled_from(FEATURES), max_size=3)):
            if draw(st.booleans()):
                del body[f]
            else:
                body[f] = draw(numbers)
    for name in ("device_id", "seq", "label", "anomaly", "device_type"):
        if draw(st.booleans()):
            body[name] = draw(passthrough)
    text = json.dumps(body, allow_nan=True)
    if kind == "array":
        text = f"[{text}]"
    if kind == "newline":
        text = text.replace(", ", ",\n", 1)
    return text.encode()


def reference(decoder: BatchDecoder, msgs: list):
    return decoder._reference(msgs, range(len(msgs)), None)


def summary(decoded):
    passed = [(r.device_id, r.seq, r.ts, r.label, r.anomaly, r.device_type) for r in decoded.rows]
    return (
        [m.offset() for m in decoded.keep],
        decoded.x.tolist(),
        passed,
        [(m.offset(), reason) for m, reason, _ in decoded.bad],
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(values(), min_size=1, max_size=12))
def test_fast_path_decodes_exactly_as_the_reference_path(batch):
    decoder = BatchDecoder(model())
    msgs = [Msg(v, i) for i, v in enumerate(batch)]
    fast, ref = decoder.decode(msgs), reference(decoder, msgs)
    assert summary(fast) == summary(ref)
    assert fast.x.dtype == np.float32 and fast.x.shape == (
        len(fast.keep),
        len(FEATURES),
    )


def test_a_clean_batch_takes_the_fast_path_and_keeps_order_and_fields():
    decoder = BatchDecoder(model())
    bodies = [
        {
            "temperature": 60 + i,
            "vib.rms": 0.3,
            "ts": 1.5 * i,
            "device_id": f"d{i}",
            "seq": i,
            "label": i % 2,
        }
        for i in range(5)
    ]
    decoded = decoder.decode([Msg(json.dumps(b).encode(), i) for i, b in enumerate(bodies)])
    assert type(decoded.rows[0]).__name__ == "FeatureRow"  # not the reference path
    assert decoded.x[:, 0].tolist() == [60, 61, 62, 63, 64] and not decoded.bad
    assert [(r.device_id, r.seq, r.ts, r.label, r.anomaly) for r in decoded.rows] == [
        (f"d{i}", i, 1.5 * i, i % 2, UNSET) for i in range(5)
    ]


def test_one_bad_record_is_dead_lettered_with_its_reason_and_the_rest_scored_in_order():
    decoder = BatchDecoder(model())
    good = {"temperature": 1, "vib.rms": 2, "ts": 3}
    batch = [
        good,
        {**good, "vib.rms": True},
        {"temperature": 1},
        good,
        {**good, "ts": 1e39},
    ]
    decoded = decoder.decode([Msg(json.dumps(b).encode(), i) for i, b in enumerate(batch)] + [Msg(b"{x", 5)])
    assert [m.offset() for m in decoded.keep] == [0, 3]
    assert [(m.offset(), reason) for m, reason, _ in decoded.bad] == [
        (1, "bad_feature_value"),
        (2, "missing_feature"),
        (4, "bad_feature_value"),
        (5, "malformed_json"),
    ]


class Judged:
    def __init__(self, scores) -> None:
        self.scores = np.asarray(scores, np.float32)
        self.thresholds = np.full(len(scores), 0.5, np.float32)
        self.flags = self.scores > self.thresholds
        self.baselines, self.baseline_records = ["global"] * len(scores), None


def test_score_records_carry_the_reference_fields_and_non_finite_scores_stay_readable():
    decoder = BatchDecoder(model())
    body = {
        "temperature": 1,
        "vib.rms": 2,
        "ts": 3,
        "device_id": "d1",
        "seq": 7,
        "anomaly": "spike",
        "label": 1,
    }
    decoded = decoder.decode([Msg(json.dumps(body).encode(), 40), Msg(json.dumps(body).encode(), 41)])
    out = [
        json.loads(v)
        for v in score_records(
            decoded,
            Judged([0.25, 0.75]),
            3,
            (4, np.array([0.9, 0.1]), np.array([True, False])),
            "me",
            10.0,
        )
    ]
    assert out[0] == {
        "device_id": "d1",
        "seq": 7,
        "ts": 3,
        "model_version": 3,
        "score": 0.25,
        "threshold": 0.5,
        "is_anomaly": False,
        "baseline": "global",
        "scored_at": 10.0,
        "scorer": "python",
        "instance": "me",
        "source": {"partition": 0, "offset": 40},
        "label": 1,
        "anomaly_kind": "spike",
        "challenger": {"model_version": 4, "score": 0.9, "is_anomaly": True},
    }
    assert out[1]["is_anomaly"] is True and out[1]["challenger"]["is_anomaly"] is False
    inf = [json.loads(v) for v in score_records(decoded, Judged([np.inf, 0.1]), 3, None, "me", 10.0)]
    assert inf[0]["score"] == float("inf") and "challenger" not in inf[0]


def test_score_records_are_one_json_object_per_record_with_only_the_fields_each_has():
    """The batch is encoded in one call and split by line: a device id with a line break or a quote stays
    in its own record; per-device baselines add their record counts; absent ground truth stays absent."""
    decoder = BatchDecoder(model())
    bodies = [
        {
            "temperature": 1,
            "vib.rms": 2,
            "ts": 3,
            "device_id": 'd"1\n2',
            "seq": 1,
            "device_type": "pump",
        },
        {
            "temperature": 1,
            "vib.rms": 2,
            "ts": 4,
            "device_id": "d2",
            "seq": None,
            "label": None,
        },
    ]
    decoded = decoder.decode([Msg(json.dumps(b).encode(), i) for i, b in enumerate(bodies)])
    judged = Judged([0.25, 0.75])
    judged.baselines, judged.baseline_records = ["device", "warmup"], [120, 7]
    out = [json.loads(v) for v in score_records(decoded, judged, 2, None, "me", 10.0)]
    assert len(out) == 2
    assert out[0]["device_id"] == 'd"1\n2' and out[0]["device_type"] == "pump" and "label" not in out[0]
    assert (out[0]["baseline"], out[0]["baseline_records"]) == ("device", 120)
    assert out[1]["seq"] is None and out[1]["label"] is None and "device_type" not in out[1]
    assert (out[1]["baseline"], out[1]["baseline_records"], out[1]["source"]) == (
        "warmup",
        7,
        {"partition": 0, "offset": 1},
    )
    assert "challenger" not in out[1] and "anomaly_kind" not in out[1]


def test_arrival_times_come_from_the_preprocessors_header_else_the_record_timestamp():
    from streamtrain.scorer.records import arrivals_s
    from streamtrain.topics import ARRIVED_HEADER

    class Stamped(Msg):
        def __init__(self, ts_ms: int, headers) -> None:
            super().__init__(b"{}", 0)
            self._ts, self._headers = ts_ms, headers

        def timestamp(self):
            return (1, self._ts)

        def headers(self):
            return self._headers

    msgs = [
        Stamped(5000, None),
        Stamped(6000, [("other", b"1"), (ARRIVED_HEADER, b"2500")]),
        Stamped(7000, [(ARRIVED_HEADER, b"not a number")]),
        Stamped(8000, [(ARRIVED_HEADER, None)]),
    ]
    assert arrivals_s(msgs).tolist() == [5.0, 2.5, 7.0, 8.0]


def test_event_times_keep_only_numbers():
    from streamtrain.scorer.records import event_times_s

    class Row:
        def __init__(self, ts) -> None:
            self.ts = ts

    assert event_times_s([Row(1.5), Row(2)]).tolist() == [1.5, 2.0]
    assert event_times_s([Row(1.5), Row(True), Row(None), Row("3"), Row(4)]).tolist() == [1.5, 4.0]


@FAST
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            json_values.map(dumps),
            almost_readings.map(dumps),
            st.just(deep(5000)),
        ),
        max_size=20,
    )
)
def test_scorer_decode_splits_every_record_into_scorable_or_dead_letter(values):
    from streamtrain.model import LoadedModel
    from streamtrain.scorer.records import BatchDecoder

    # Decoding needs the model's inputs only, not its network.
    model = LoadedModel(
        None,
        {"version": 1, "feature_names": ["temperature", "current"], "threshold": 1.0},
    )
    msgs = [SimpleNamespace(value=lambda v=v: v) for v in values]
    decoded = BatchDecoder(model).decode(msgs)
    x, keep, bad = decoded.x, decoded.keep, decoded.bad
    assert len(keep) + len(bad) == len(msgs)
    assert x.shape == (len(keep), 2) and bool((abs(x) < math.inf).all())
    assert all(
        reason in ("malformed_json", "missing_feature", "bad_feature_value") and detail for _, reason, detail in bad
    )
