"""docs/reference.md is what the code says today: regenerate it with `make docs`."""

from __future__ import annotations

from streamtrain.cli import reference
from streamtrain.settings import CommonSettings
from tests.conftest import REPO

PAGE = REPO / "docs" / "reference.md"


def test_the_reference_page_is_fresh():
    assert PAGE.read_text() == reference.render(), "docs/reference.md is stale: run `make docs` and commit it"


def test_every_setting_and_command_is_on_the_page():
    text = PAGE.read_text()
    for name in CommonSettings.model_fields:
        assert f"`STREAMTRAIN_{name.upper()}`" in text
    for command in ("simulate", "bridge", "preprocess", "train", "score", "evaluate", "demo", "stack up"):
        assert f"### `streamtrain {command}`" in text
    assert "| `spec.image.tag` |" in text
