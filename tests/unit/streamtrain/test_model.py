"""The windowed model's window score on arrays (real Keras network, no brokers): the scorer's
arithmetic (``LoadedModel.assess``) with statistics chosen the way the trainer chooses them.

Hostile input (strategies in tests/unit/hostile.py): model records on the models topic, model versions as
they are loaded and as the scorer's model watcher handles them; whatever arrives, the answer is a value or a
typed, explained refusal, never anything else raised (the codec's and the watcher's own tests share a META of
another shape: tests/unit/streamtrain/test_modelcodec.py, tests/unit/scorer/test_models.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from streamtrain.baselines import DeviceBaselines
from streamtrain.model import LoadedModel, window_means, window_score
from streamtrain.modelcodec import (
    ModelAssembler,
    ModelRejected,
    ModelVersion,
    encode,
)
from streamtrain.trainer.networks import build_conv_autoencoder
from streamtrain.trainer.thresholds import window_spread, window_threshold
from tests.unit.hostile import (
    FAST,
    META,
    REASONS,
    dumps,
    hostile_manifests,
    json_values,
    keras_like_zip,
    manifest,
)

WINDOW = 16


def windows(x: np.ndarray) -> np.ndarray:
    return np.stack([x[i - WINDOW + 1 : i + 1] for i in range(WINDOW - 1, len(x))]).astype(np.float32)


def loaded(n_features: int, train: np.ndarray, newest_threshold: float = 1e9) -> LoadedModel:
    """A one-device model whose baseline is ``train``'s median/IQR, window statistics from its windows."""
    net = build_conv_autoencoder(WINDOW, n_features, [4, 1], 3, 0.005, 7)
    med = np.median(train, 0)
    iqr = (np.percentile(train, 75, 0) - np.percentile(train, 25, 0)) / 1.349
    means = window_means((windows(train) - med) / iqr, None)
    center, scale = window_spread(means)
    threshold = window_threshold(window_score(means, center, scale), 4.0)
    b = DeviceBaselines(
        50,
        {"dev": 0},
        med[None, :],
        iqr[None, :],
        np.asarray([newest_threshold]),
        np.asarray([len(train)]),
        {},
        center[None, :],
        scale[None, :],
        np.asarray([threshold]),
    )
    meta = {
        "version": 1,
        "feature_names": [f"f{i}" for i in range(n_features)],
        "threshold": newest_threshold,
        "normalization": {"mean": [0.0] * n_features, "std": [1.0] * n_features},
        "input": {"kind": "sequences", "length": WINDOW},
        "baselines": b.as_metadata(),
        "window_score": {
            "of": "input",
            "center": center.tolist(),
            "scale": scale.tolist(),
            "threshold": threshold,
        },
    }
    return LoadedModel(net, meta)


def test_a_lasting_shift_hidden_in_reading_noise_is_flagged_and_normal_windows_are_not():
    rng = np.random.default_rng(1)
    # One channel of bytes per second: a shift of 1.5 standard deviations, far inside one reading's noise.
    train = 1e6 + 5e4 * rng.normal(size=(400, 1))
    normal = 1e6 + 5e4 * rng.normal(size=(200, 1))
    fault = 1e6 + 5e4 * (rng.normal(size=(200, 1)) + 1.5)
    model = loaded(1, train)
    quiet = model.assess(windows(normal), ["dev"] * (200 - WINDOW + 1))
    assert quiet.flags.mean() <= 0.02 and quiet.baselines[0] == "device"
    caught = model.assess(windows(fault), ["dev"] * (200 - WINDOW + 1))
    assert caught.flags.mean() >= 0.9
    # The score is in units of the thresholds, so the record's threshold is 1.
    assert np.all(caught.thresholds == 1.0) and np.all(caught.flags == (caught.scores > 1.0))


def test_a_spike_is_still_caught_by_the_newest_readings_own_threshold():
    rng = np.random.default_rng(2)
    train = 20 + rng.normal(size=(400, 3))
    model = loaded(3, train, newest_threshold=25.0)
    x = 20 + rng.normal(size=(60, 3))
    x[40, 1] += 60  # one reading far out: the window mean moves by about 4 standard deviations only
    judged = model.assess(windows(x), ["dev"] * (60 - WINDOW + 1))
    assert judged.flags[40 - WINDOW + 1]


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


@FAST
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={k: json_values for k in META}),
        st.builds(
            lambda m, k, v: {**m, k: v},
            st.just(META),
            st.sampled_from(sorted(META)),
            json_values,
        ),
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


class _Champion:
    version = 1


@FAST
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.none(),
                st.binary(max_size=30),
                st.sampled_from(
                    [
                        b"model/2/manifest",
                        b"model/2/chunk/0",
                        b"control/promote",
                        b"control/other",
                    ]
                ),
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
