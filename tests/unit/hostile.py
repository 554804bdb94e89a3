"""Hypothesis strategies and builders of hostile input, shared by the property tests of every parser and decoder
that reads input from outside: whatever arrives, each one answers with a value or a typed, explained refusal, and
never raises anything else (tests/unit/streamtrain/test_telemetry.py, .../preprocessing/test_spec.py, ...)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from streamtrain.modelcodec import (
    FORMAT_VERSION,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)


json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


device_ids = st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z"), st.text(max_size=70))


FIELDS = [
    "device_id",
    "ts",
    "seq",
    "temperature",
    "current",
    "label",
    "anomaly",
    "device_type",
]


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
    st.builds(
        lambda a, s: manifest(a, 1, size=s),
        st.binary(max_size=50),
        st.one_of(st.integers(), scalars),
    ),
    st.builds(lambda a, m: manifest(a, 1, metadata=m), st.binary(max_size=50), json_values),
    st.builds(lambda a, n: manifest(a, n), st.binary(max_size=50), st.integers(-5, 10**9)),  # huge/negative counts
    st.just(manifest(b"", 1, size=10**12)),
)


def keras_like_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", "{not a keras config")
    return buf.getvalue()
