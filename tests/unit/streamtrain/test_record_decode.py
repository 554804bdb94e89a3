"""The batch decoder gives exactly the rows, labels, devices and skip counts of the record-by-record
reference rules, for clean batches (the vectorised path) and for batches with bad records."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtrain.kafka_dataset import SourceRange, shuffled_batches, split_range
from streamtrain.record_decode import BatchDecoder, decode_body, decode_window

FEATURES = ["current", "pressure", "temperature"]


def reference(values: list[bytes], window: int | None = None):
    rows, labels, devices, skipped = [], [], [], 0
    for v in values:
        try:
            body = json.loads(v)
        except ValueError:
            body = None
        row = None
        if isinstance(body, dict):
            row = decode_body(body, FEATURES) if window is None else decode_window(body, FEATURES, window)
        if row is None:
            skipped += 1
            continue
        rows.append(row)
        label = body.get("label")
        labels.append(int(label) if isinstance(label, (int, bool)) else -1)
        devices.append(body.get("device_id"))
    return np.asarray(rows, np.float32), labels, devices, skipped


def check(values: list[bytes], window: int | None = None) -> BatchDecoder:
    """Both decoders (with and without identities) against the reference; the first decoder."""
    x, labels, devices, skipped = reference(values, window)
    decoders = [BatchDecoder(FEATURES, window), BatchDecoder(FEATURES, window, identities=False)]
    for decoder in decoders:
        got = decoder.decode(values)
        assert got.skipped == skipped
        assert got.devices == (devices if decoder.identities else [None] * len(devices))
        assert got.labels.tolist() == (labels if decoder.identities else [-1] * len(labels))
        assert got.x.dtype == np.float32 and np.array_equal(got.x.reshape(x.shape), x)
    assert decoders[0].fallbacks == decoders[1].fallbacks or not decoders[1].fallbacks
    return decoders[0]


def record(i: int, **extra) -> bytes:
    body = {
        "device_id": f"d{i % 3}",
        "ts": 1.5,
        "seq": i,
        "current": 1.0 + i,
        "pressure": 3,
        "temperature": -60.25 * i,
        "label": i % 2,
        **extra,
    }
    return json.dumps(body).encode()


def test_a_clean_batch_decodes_like_the_reference():
    decoder = check([record(i) for i in range(50)] + [record(99, label=None), record(98, label=True, device_id=None)])
    assert decoder.fallbacks == 0  # the vectorised path, not record by record


def test_bad_records_are_skipped_exactly_as_the_reference_skips_them():
    bad = [
        b"not json",
        b"[1, 2]",
        record(1, current="2.5"),
        record(2, pressure=None),
        record(3, label="x"),
        json.dumps({"current": 1, "pressure": 2}).encode(),
        record(4, temperature=1e400),
        b'{"current": NaN, "pressure": 1, "temperature": 2}',
        record(5, current=True),
    ]
    for one in bad:
        check([record(i) for i in range(5)] + [one] + [record(7)])


def sequence(i: int, names=("temperature", "current", "pressure", "vibration"), length: int = 4) -> bytes:
    values = [[float(i + r + c) for c in range(len(names))] for r in range(length)]
    return json.dumps({"device_id": f"d{i}", "features": list(names), "values": values, "label": 0}).encode()


def test_sequence_batches_decode_like_the_reference():
    assert check([sequence(i) for i in range(20)], window=4).fallbacks == 0
    assert BatchDecoder(["current"], identities=False).decode([record(1), record(2)]).x.shape == (2, 1)
    check(
        [
            sequence(1),
            sequence(2, length=3),
            sequence(3, names=("pressure", "current", "temperature")),
            sequence(4, names=("current",)),
            b'{"features": ["current"], "values": "x"}',
        ],
        window=4,
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=False),
            st.integers(-(2**60), 2**60),
            st.booleans(),
            st.none(),
            st.text(max_size=3),
        ),
        min_size=3,
        max_size=30,
    )
)
def test_any_mix_of_values_decodes_like_the_reference(values):
    out = []
    for i in range(0, len(values) - 2, 3):
        out.append(json.dumps(dict(zip(FEATURES, values[i : i + 3]), device_id=i)).encode())
    check(out)


def test_partitions_are_dealt_to_readers_and_batches_keep_every_row():
    rng = SourceRange("t", {0: (0, 10), 1: (5, 5), 2: (3, 9), 3: (0, 1)})
    shares = split_range(rng, 2)
    assert [sorted(s.partitions) for s in shares] == [[0, 3], [2]]
    chunks = [np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * k for k, n in enumerate([7, 300, 5, 1000])]
    for order in (None, np.random.default_rng(1)):
        batches = list(shuffled_batches(iter(chunks), 64, 256, order))
        assert all(len(b) == 64 for b in batches[:-1]) and 0 < len(batches[-1]) <= 64
        assert sorted(map(tuple, np.concatenate(batches))) == sorted(map(tuple, np.concatenate(chunks)))
