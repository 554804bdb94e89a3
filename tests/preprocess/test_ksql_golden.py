"""The ksqlDB rendering is kept under golden files (STREAMTRAIN_REGEN_GOLDEN=1 rewrites them)."""

import os
from pathlib import Path

import pytest

from streamtrain.preprocessing.ksql import render
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.settings import CommonSettings
from tests.preprocess.specs import every_construct

GOLDEN = Path(__file__).with_name("golden")


@pytest.mark.parametrize("name,spec", [("default", PreprocessSpec.default), ("every_construct", every_construct)])
def test_ksql_matches_golden(name, spec):
    text = "\n\n".join(render(spec(), CommonSettings())) + "\n"
    path = GOLDEN / f"{name}.sql"
    if os.environ.get("STREAMTRAIN_REGEN_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with STREAMTRAIN_REGEN_GOLDEN=1"
    assert text == path.read_text()


def test_ksql_uses_the_configured_topics():
    s = CommonSettings(topic_raw="a.raw", topic_features="a.features", topic_windows="a.windows")
    text = "\n".join(render(PreprocessSpec.default(), s))
    assert "KAFKA_TOPIC='a.raw'" in text and "KAFKA_TOPIC='a.features'" in text and "KAFKA_TOPIC='a.windows'" in text
