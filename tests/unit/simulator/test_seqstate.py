"""CSV replay keeps readings' identities: a seq column is taken as is, otherwise a device's seqs
continue after the newest seq an earlier replay published to the same broker."""

import pytest

from streamtrain.simulator import seqstate
from streamtrain.simulator.publish import CsvReplayConfig, read_csv_rows


def rows(tmp_path, text: str, **cfg) -> list[tuple[str, int]]:
    path = tmp_path / "r.csv"
    path.write_text(text)
    return [(d, m["seq"]) for d, m in read_csv_rows(CsvReplayConfig(path, device_column="dev", speed=0, **cfg))]


def test_a_seq_column_is_the_readings_seq_and_never_a_channel(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("timestamp,dev,seq,x\n1,a,7,1.5\n2,a,8.0,1.6\n3,b,0,2\n")
    got = read_csv_rows(CsvReplayConfig(path, device_column="dev", speed=0))
    assert [(d, m["seq"]) for d, m in got] == [("a", 7), ("a", 8), ("b", 0)]
    assert all(set(m) == {"device_id", "ts", "seq", "x"} for _, m in got)
    assert rows(tmp_path, "timestamp,dev,n,x\n1,a,4,1\n", seq_column="n") == [("a", 4)]


@pytest.mark.parametrize("bad", ["-1", "1.5", "x", ""])
def test_a_bad_seq_refuses_the_file_naming_the_line(tmp_path, bad):
    with pytest.raises(ValueError, match=r"r\.csv:3: seq"):
        rows(tmp_path, f"timestamp,dev,seq,x\n1,a,0,1\n2,a,{bad},1\n")


def test_without_a_seq_column_a_second_replay_continues_each_devices_seqs(tmp_path):
    state = tmp_path / "seqs.json"
    broker = "127.0.0.1:1883"
    first = rows(tmp_path, "timestamp,dev,x\n1,a,1\n2,b,1\n3,a,1\n", first_seqs=seqstate.next_seqs(state, broker))
    assert first == [("a", 0), ("b", 0), ("a", 1)]
    seqstate.remember(state, broker, {"a": 1, "b": 0})
    again = rows(tmp_path, "timestamp,dev,x\n4,a,1\n5,c,1\n6,b,1\n", first_seqs=seqstate.next_seqs(state, broker))
    assert again == [("a", 2), ("c", 0), ("b", 1)]
    assert seqstate.next_seqs(state, "other:1883") == {}  # another broker, another pipeline
    seqstate.remember(state, broker, {"a": 0})  # never lowered
    assert seqstate.next_seqs(state, broker) == {"a": 2, "b": 1}


def test_an_unreadable_seq_state_is_a_clear_error(tmp_path):
    state = tmp_path / "seqs.json"
    state.write_text("{not json")
    with pytest.raises(ValueError, match="seqs.json: unreadable seq state"):
        seqstate.next_seqs(state, "h:1")
