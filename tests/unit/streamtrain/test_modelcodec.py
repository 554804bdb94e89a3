"""Unit tests of the model codec: what travels on the models topic, and what is refused."""

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtrain.modelcodec import CHUNK_BYTES, ModelAssembler, ModelRejected, encode

META = {
    "version": 3,
    "feature_names": ["a", "b"],
    "threshold": 0.5,
    "format": "keras-v3",
}


def assemble(records):
    asm, out = ModelAssembler(), []
    for k, v in records:
        mv = asm.add(k, v)
        if mv is not None:
            out.append(mv)
    return out


def test_artefact_larger_than_a_message_round_trips_in_chunks():
    artefact = bytes(range(256)) * (3 * CHUNK_BYTES // 256 + 77)
    records = encode(artefact, META)
    assert len(records) == 5 and all(len(v) <= CHUNK_BYTES for _, v in records[:-1])
    [mv] = assemble(records)
    assert mv.artefact == artefact and mv.version == 3
    assert mv.metadata["sha256"] == hashlib.sha256(artefact).hexdigest()


def test_missing_chunk_is_refused_as_truncated():
    records = encode(b"x" * (2 * CHUNK_BYTES + 5), META)
    with pytest.raises(ModelRejected) as info:
        assemble(records[:1] + records[2:])
    assert info.value.reason == "truncated"


def test_flipped_byte_is_refused_by_checksum():
    records = encode(b"y" * 1000, META)
    key, value = records[0]
    records[0] = (key, b"z" + value[1:])
    with pytest.raises(ModelRejected) as info:
        assemble(records)
    assert info.value.reason == "checksum"


@pytest.mark.parametrize(
    "manifest,reason",
    [
        (b"not json", "bad_metadata"),
        (
            json.dumps({"codec": 99, "chunks": 0, "size": 0, "sha256": "", "metadata": META}).encode(),
            "incompatible",
        ),
        (
            json.dumps(
                {
                    "codec": 1,
                    "chunks": 0,
                    "size": 0,
                    "sha256": hashlib.sha256(b"").hexdigest(),
                    "metadata": {"version": 3},
                }
            ).encode(),
            "bad_metadata",
        ),
        (
            json.dumps(
                {
                    "codec": 1,
                    "chunks": 0,
                    "size": 0,
                    "sha256": hashlib.sha256(b"").hexdigest(),
                    "metadata": {**META, "version": 4},
                }
            ).encode(),
            "bad_metadata",
        ),
    ],
)
def test_bad_manifests_are_refused_with_a_reason(manifest, reason):
    with pytest.raises(ModelRejected) as info:
        ModelAssembler().add(b"model/3/manifest", manifest)
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.binary(max_size=30),
                st.sampled_from([b"model/1/manifest", b"model/1/chunk/0", b"model/2/chunk/1"]),
            ),
            st.one_of(st.none(), st.binary(max_size=200)),
        ),
        max_size=20,
    )
)
def test_garbage_never_raises_anything_but_model_rejected(records):
    asm = ModelAssembler()
    for k, v in records:
        try:
            asm.add(k, v)
        except ModelRejected as exc:
            assert exc.reason and exc.detail
