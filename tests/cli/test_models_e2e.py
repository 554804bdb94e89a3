"""`streamtrain models` on real Kafka against versions made by the real trainer and a running scorer."""

from __future__ import annotations

import json
import subprocess

import pytest

from streamtrain import exitcodes
from tests.programs import STREAMTRAIN, settings_env
from tests.score.test_scorer_e2e import DEVICES, FeatureStream, start_scorer, train, wait_scores

pytestmark = pytest.mark.e2e


def models(pipeline, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STREAMTRAIN, "models", *args],
        env=settings_env(pipeline),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_list_show_export_and_promote_read_what_the_trainer_published_and_the_scorer_serves(pipeline, tmp_path):
    stream = FeatureStream(pipeline)
    stream.send(100)
    train(pipeline, tmp_path, "train-v1", records=2000)
    train(pipeline, tmp_path, "train-v2", records=2000)
    scorer = start_scorer(pipeline, tmp_path)
    try:
        scorer.wait_log('"new_version": 2', timeout=120)
        stream.send(10)
        wait_scores(pipeline, set(stream.sent))

        listed = models(pipeline, "list", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["version"] for r in rows] == [1, 2]
        assert rows[1]["parent"] == 1
        assert rows[1]["records"] == 2000
        assert rows[1]["source"] == pipeline.topic_features
        assert rows[1]["serving"] == "champion"
        assert rows[0]["serving"] == "-" or "champion" in rows[0]["serving"]  # v1 scored before v2 arrived
        table = models(pipeline, "list")
        assert table.stdout.splitlines()[0].split()[:3] == ["VERSION", "PARENT", "CREATED"]

        shown = models(pipeline, "show", "2")
        assert shown.returncode == 0, shown.stderr
        manifest = json.loads(shown.stdout)
        assert manifest["version"] == 2 and manifest["parent_version"] == 1
        assert manifest["source"]["topic"] == pipeline.topic_features
        assert manifest["record_count"] == 2000

        exported = models(pipeline, "export", "2", str(tmp_path / "v2"))
        assert exported.returncode == 0, exported.stderr
        assert json.loads((tmp_path / "v2" / "manifest.json").read_text())["version"] == 2
        import keras  # noqa: PLC0415 - real TensorFlow, only in this test

        model = keras.saving.load_model(tmp_path / "v2" / "model.keras", compile=False)
        assert model.input_shape[-1] == len(manifest["feature_names"])
        if "onnx" in manifest.get("attachments", []):
            assert (tmp_path / "v2" / "model.onnx").stat().st_size > 0

        missing = models(pipeline, "show", "7")
        assert missing.returncode == exitcodes.FAILED
        assert "version 7 is not on" in missing.stderr and "versions: 1, 2" in missing.stderr
        refused = models(pipeline, "promote", "7")
        assert refused.returncode == exitcodes.FAILED
        promoted = models(pipeline, "promote", "2")
        assert promoted.returncode == 0, promoted.stderr
    finally:
        assert scorer.stop() == 0, scorer.log()[-3000:]
    assert len(DEVICES) * 110 == len(stream.sent)


def test_an_unreachable_broker_is_named_without_a_traceback(pipeline):
    done = subprocess.run(
        [*STREAMTRAIN, "models", "list", "--kafka-bootstrap", "127.0.0.1:1", "--timeout", "2"],
        env=settings_env(pipeline),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == exitcodes.KAFKA
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr
    assert "Traceback" not in done.stderr and "rdkafka" not in done.stderr
