"""Reading the training range in a child process (``KafkaSource(apart=True)``, the trainer's default)
against the real broker: the same rows as the in-process threads, epoch after epoch from one child,
errors raised in the trainer, an abandoned read stops the child, nothing left running after close."""

from __future__ import annotations

import contextlib
import os
import signal

import numpy as np
import pytest

from streamtrain.kafka_dataset import KafkaSource, resolve_range
from tests.train.test_trainer_e2e import FEATURES, produce_features, settings_for

pytestmark = pytest.mark.e2e


def rows(x: np.ndarray) -> list[tuple]:
    return sorted(map(tuple, np.round(x, 5)))


def test_child_reads_the_same_rows_labels_and_devices_as_threads(pipeline):
    produce_features(pipeline, 1500, seed=11)
    rng = resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features, max_records=1200, newest=True)
    threads = KafkaSource(pipeline.kafka_bootstrap, rng, FEATURES)
    with KafkaSource(pipeline.kafka_bootstrap, rng, FEATURES, apart=True) as apart:
        want = list(threads.batches_with_devices())
        for _ in range(2):  # each epoch is a new read of the same child
            got = list(apart.batches_with_devices())
            assert rows(np.concatenate([x for x, _, _ in got])) == rows(np.concatenate([x for x, _, _ in want]))
            by_row = lambda batches: sorted(  # noqa: E731
                (tuple(np.round(r, 5)), int(label), d) for x, ls, ds in batches for r, label, d in zip(x, ls, ds)
            )
            assert by_row(got) == by_row(want)
        child = apart.process._proc
        assert child is not None and child.is_alive()  # one child served both reads
        assert apart.reads == 2 and apart.skipped == threads.skipped == 0
    assert not child.is_alive()  # closed with the source


@contextlib.contextmanager
def read_started(pipeline, seed: int, n: int = 3000):
    """A source reading ``n`` fresh records apart, one batch taken: (source, the read, its child)."""
    produce_features(pipeline, n, seed=seed)
    rng = resolve_range(pipeline.kafka_bootstrap, pipeline.topic_features, max_records=n, newest=True)
    with KafkaSource(pipeline.kafka_bootstrap, rng, FEATURES, apart=True) as source:
        reading = source.inputs()
        next(reading)
        assert source.process is not None and source.process._proc is not None
        yield source, reading, source.process._proc


def test_abandoned_read_stops_the_child_and_the_next_read_starts_another(pipeline):
    with read_started(pipeline, seed=12) as (source, reading, child):
        reading.close()  # a consumer that stops part way (an error in training, a stop signal)
        assert not child.is_alive()
        assert len(np.concatenate(list(source.inputs()))) == 3000


def test_a_child_killed_mid_read_is_an_error_in_the_trainer_not_a_hang(pipeline):
    """The reader process dies (the OOM killer, a crash): the trainer's read fails with the exit code,
    and the next read (a retry) starts a new child."""
    # More records than the child can hold ahead (8 decoded batches of up to 5,000 in its queue, one
    # socket buffer in the pipe): it is still reading when it is killed.
    with read_started(pipeline, seed=13, n=100_000) as (source, reading, child):
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"reader process ended before the read was done \(exit code -9\)"):
            list(reading)
        assert len(np.concatenate(list(source.inputs()))) == 100_000


def test_trainer_reads_apart_by_default_and_in_threads_when_asked(pipeline):
    from streamtrain.trainer.train import train_once

    produce_features(pipeline, 1200, seed=14)
    a = train_once(settings_for(pipeline, train_records=1000, epochs=2), publish=False)
    b = train_once(settings_for(pipeline, train_records=1000, epochs=2, reader_process=False), publish=False)
    assert a["source"] == b["source"] and a["record_count"] == b["record_count"] == 1000
    for key in ("mean", "std"):  # the same rows, whichever way they were read
        assert np.allclose(a["normalization"][key], b["normalization"][key], rtol=1e-6)
