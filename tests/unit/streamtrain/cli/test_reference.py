"""docs/reference.md is what the code says today: regenerate it with `make docs`."""

from __future__ import annotations

import subprocess
import sys

from streamtrain.settings import CommonSettings
from tests.conftest import REPO

PAGE = REPO / "docs" / "reference.md"


def test_the_reference_page_is_fresh():
    # Rendered in a process of its own, as `make docs` does: click keeps each command's help option once made,
    # so a process whose tests ran a command on its own (without the group's -h) would render another page.
    fresh = subprocess.run(
        [sys.executable, "-m", "streamtrain.cli.reference"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert PAGE.read_text() == fresh, "docs/reference.md is stale: run `make docs` and commit it"


def test_every_setting_and_command_is_on_the_page():
    text = PAGE.read_text()
    for name in CommonSettings.model_fields:
        assert f"`STREAMTRAIN_{name.upper()}`" in text
    for command in ("simulate", "bridge", "preprocess", "train", "score", "evaluate", "demo", "stack up"):
        assert f"### `streamtrain {command}`" in text
    assert "| `spec.image.tag` |" in text
