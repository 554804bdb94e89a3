"""User documentation speaks of the product, not of the team's plans: no issue numbers."""

from __future__ import annotations

import re

from tests.conftest import REPO

USER_DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted((REPO / "charts").rglob("*.txt")),
    *sorted((REPO / "charts").rglob("README.md")),
    *sorted((REPO / "examples").glob("*.yaml")),
]
INTERNAL = re.compile(r"\bissues? #?\d+|\(#\d+\)", re.IGNORECASE)


def test_no_user_document_names_an_issue_number():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}"
        for path in USER_DOCS
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert not found, "\n".join(found)
