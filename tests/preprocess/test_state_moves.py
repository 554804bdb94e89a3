"""The embedded engine's per-device state (open windows, sequence histories) rebuilt from what an
earlier owner committed: continuing on a rebuilt engine gives exactly the outputs of one engine."""

from __future__ import annotations

from streamtrain.preprocessing.engine import Engine
from streamtrain.preprocessing.spec import PreprocessSpec, Sequences
from tests.preprocess.test_agreement import simulated


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
