"""`streamtrain evaluate --since/--until`: the one time parser, and quality counted from a stream read once."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
import structlog
from click.testing import CliRunner

from streamtrain import logs
from streamtrain.quality import evaluate
from streamtrain.scorer.evaluate import ScoreStream, command, describe_range, parse_time

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp()
NOW_MS = round(NOW * 1000)


@pytest.mark.parametrize(
    ("text", "back_s"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 7 * 86400), ("1w", 604800), ("1.5h", 5400), (" 0s ", 0)],
)
def test_a_duration_is_counted_back_from_now(text, back_s):
    assert parse_time(text, now=NOW) == NOW_MS - back_s * 1000


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2026-12-07T10:00:00Z", datetime(2026, 12, 7, 10, tzinfo=UTC)),
        ("2026-12-07T11:00:00+01:00", datetime(2026, 12, 7, 10, tzinfo=UTC)),
        ("2026-12-07T10:00:00", datetime(2026, 12, 7, 10, tzinfo=UTC)),  # no zone: UTC
        ("2026-12-07", datetime(2026, 12, 7, tzinfo=UTC)),
        ("2026-12-07T10:00:00.250Z", datetime(2026, 12, 7, 10, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_an_iso_time_is_read_with_its_zone_or_as_utc(text, at):
    assert parse_time(text, now=NOW) == round(at.timestamp() * 1000)


@pytest.mark.parametrize("text", ["", "15", "m", "15 minutes", "-2h", "2y", "yesterday", "2026-13-01", "15m ago"])
def test_anything_else_is_refused(text):
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_time(text, now=NOW)


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_the_command_refuses_a_bad_time_with_a_usage_error(option):
    result = CliRunner().invoke(command, [option, "last tuesday"])
    assert result.exit_code == 2
    assert "neither an ISO 8601 time" in result.output and option in result.output


def test_the_range_is_named_in_words():
    assert describe_range(None, None) == ""
    assert describe_range(NOW_MS, None) == " from 2026-12-07T12:00:00Z to the end"
    assert describe_range(None, NOW_MS) == " from the beginning to 2026-12-07T12:00:00Z"


class Record:
    """What ScoreStream reads of a confluent_kafka Message."""

    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def score(seq: int, device: str = "d1", flagged: bool = False, label: int | None = 0) -> dict:
    return {"device_id": device, "seq": seq, "model_version": 1, "is_anomaly": flagged, "label": label}


def test_evaluate_counts_a_stream_it_reads_once():
    scores = [score(i, flagged=i % 4 == 0, label=int(i % 5 == 0)) for i in range(40)]
    scores += [score(3), score(50, label=None)]  # a duplicate, an unlabelled reading
    once = iter(scores)  # a second pass would find nothing
    ev = evaluate(once)
    assert next(once, None) is None
    assert ev == evaluate(list(scores))
    assert ev.overall.as_dict()["records"] == 40 and ev.duplicates == 1 and ev.unlabelled == 1


@pytest.fixture
def json_logs():
    """JSON log lines on stderr, as the command configures them, for one test; then structlog and logging as
    they were (this test's stderr is a capture closed when it ends: later tests must not log into it)."""
    config, handlers, level = structlog.get_config(), logging.root.handlers[:], logging.root.level
    logs.configure(fmt="json")
    yield
    structlog.configure(**config)
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def test_the_score_stream_yields_one_at_a_time_and_counts_what_it_cannot_read(json_logs, capsys):
    values = [json.dumps(score(i)).encode() for i in range(7)]
    values[2], values[5] = b"{not json", b"[1, 2]"
    produced: list[int] = []

    def messages():
        for i, v in enumerate(values):
            produced.append(i)
            yield Record(v, i)

    stream = ScoreStream(messages(), "t.scores", every=3)
    it = iter(stream)
    assert next(it)["seq"] == 0 and produced == [0]  # nothing read ahead
    rest = list(it)
    assert [s["seq"] for s in rest] == [1, 3, 4, 6]
    assert (stream.read, stream.undecodable) == (7, 2)
    out = capsys.readouterr()
    assert out.out == ""  # stdout stays the result (--json)
    progress = [line for line in out.err.splitlines() if "records read" in line]
    assert progress == ["t.scores: 3 records read", "t.scores: 6 records read"]
