"""Hostile input, CSV replay files: whatever arrives, the answer is a value or a typed, explained refusal, never
anything else raised (strategies in tests/unit/hostile.py)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streamtrain import telemetry
from streamtrain.simulator.publish import CsvReplayConfig, read_csv_rows


def write_csv(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "replay.csv"
    path.write_bytes(content)
    return path


def check_csv(path: Path, **cfg):
    try:
        rows = read_csv_rows(CsvReplayConfig(path, **cfg, speed=0))
    except ValueError as exc:
        assert str(path) in str(exc) or "--device" in str(exc)
        return None
    for device, msg in rows:  # every row the replay would publish, the bridge accepts
        assert isinstance(
            telemetry.validate(json.dumps(msg).encode(), f"devices/{device}/telemetry"),
            telemetry.Reading,
        )
    return rows


cells = st.one_of(
    st.text(max_size=12),
    st.floats().map(str),
    st.integers().map(str),
    st.sampled_from(["2024-03-01T10:00:00Z", "nan", "inf", "", "1e999", "9" * 30]),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.lists(cells, min_size=0, max_size=6), max_size=12),
    st.sampled_from(
        [
            {"device_column": "machine"},
            {"device_id": "pump-1"},
            {"device_column": "machine", "label_column": "label"},
        ]
    ),
)
def test_csv_tables_of_any_cells_replay_or_fail_with_the_line(tmp_path, table, cfg):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["timestamp", "machine", "temp", "label", "seq"])
    for row in table:
        w.writerow(row)
    check_csv(write_csv(tmp_path, buf.getvalue().encode("utf-8", "surrogatepass")), **cfg)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.binary(max_size=500))
@example(b"timestamp,temp\n1,\x00\n")
@example(b"timestamp,temp\n\xff\xfe,1\n")
@example(b'timestamp,temp\n"unterminated,1\n')
def test_csv_files_of_any_bytes_replay_or_fail_with_a_value_error(tmp_path, content):
    check_csv(write_csv(tmp_path, content), device_id="pump-1")
