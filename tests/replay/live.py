"""A recording replayed live the README's way: spec, training part, `train`, a scorer started at the
end of the topics, test part; the score records read back."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from streamtrain.kafka import read_topic
from streamtrain.modelcodec import read_versions
from streamtrain.settings import CommonSettings
from streamtrain.simulator.publish import replay_args
from tests.fleet.stream import wait_until
from tests.programs import STREAMTRAIN, Program, drop_mqtt_session, settings_env


def count(bootstrap: str, topic: str) -> int:
    return len(read_topic(bootstrap, topic, timeout=10))


def replay(csv_path: Path, env: dict, seq_state: Path) -> dict:
    done = subprocess.run(
        [*STREAMTRAIN, *replay_args(csv_path, seq_state=seq_state)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_and_score(
    pipeline: CommonSettings,
    tmp: Path,
    spec: str,
    train_csv: Path,
    test_csv: Path,
    train_windows: int,
    test_rows: int,
    train_args: list[str],
) -> tuple[dict, list[dict]]:
    """(the trained version's metadata as published, every score record) of the two replays."""
    tag = uuid.uuid4().hex[:6]
    (tmp / "spec.yaml").write_text(spec)
    seq_state = tmp / "seqs.json"
    env = settings_env(pipeline)
    bridge = Program(["bridge"], settings_env(pipeline, client_id=f"lb-{tag}", share_group=f"lb-{tag}"), tmp / "b.log")
    pre = Program(["preprocess", "--spec", str(tmp / "spec.yaml"), "--group-id", f"lp-{tag}"], env, tmp / "p.log")
    scorer = None
    try:
        bridge.start().wait_log('"mqtt_subscribed"')
        pre.start()
        replay(train_csv, env, seq_state)
        wait_until(
            "training part in sequences",
            lambda: (
                (n := count(pipeline.kafka_bootstrap, pipeline.topic_sequences)) == train_windows,
                f"{n}/{train_windows}",
            ),
            timeout=180,
        )
        done = subprocess.run(
            [*STREAMTRAIN, "train", *train_args], env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
        version = json.loads(done.stdout.strip().splitlines()[-1])["version"]
        meta = next(
            v.metadata for v in read_versions(pipeline.kafka_bootstrap, pipeline.topic_models) if v.version == version
        )
        scorer = Program(["score", "--start-at", "latest", "--group-id", f"ls-{tag}"], env, tmp / "s.log").start()
        scorer.wait_log('"start_position"', timeout=120)
        replay(test_csv, env, seq_state)
        wait_until(
            "test part scored",
            lambda: ((n := count(pipeline.kafka_bootstrap, pipeline.topic_scores)) >= test_rows, f"{n}/{test_rows}"),
            timeout=300,
        )
    finally:
        for prog in (scorer, pre, bridge):
            if prog is not None:
                assert prog.stop() == 0, prog.log()[-3000:]
        drop_mqtt_session(pipeline.mqtt_port, f"lb-{tag}")
    scores = [json.loads(m.value()) for m in read_topic(pipeline.kafka_bootstrap, pipeline.topic_scores, timeout=30)]
    return meta, scores
