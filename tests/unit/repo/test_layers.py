"""The import rules cover every part of the package: each direct child of `streamtrain` is either
core or a program (or the CLI), so a new module cannot slip past lint-imports' contracts."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONTRACTS = {c["id"]: c for c in PYPROJECT["tool"]["importlinter"]["contracts"]}
CLI = "streamtrain.cli"


def direct_children() -> set[str]:
    """streamtrain's modules and subpackages as installed: its own folder plus the mapped program folders."""
    folder = REPO / "streamtrain"
    own = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
    own |= {p.name for p in folder.iterdir() if (p / "__init__.py").exists()}
    mapped = {name.split(".", 1)[1] for name in PYPROJECT["tool"]["setuptools"]["package-dir"]}
    return {f"streamtrain.{name}" for name in own | mapped}


def test_every_direct_child_of_streamtrain_is_core_or_a_program() -> None:
    core = set(CONTRACTS["core"]["source_modules"])
    programs = set(CONTRACTS["programs"]["modules"])
    unlisted = direct_children() - core - programs - {CLI}
    assert not unlisted, f"add to the core or the programs in pyproject.toml [tool.importlinter]: {sorted(unlisted)}"
    assert not core & programs, f"both core and program: {sorted(core & programs)}"
    assert not (core | programs) - direct_children(), "a listed module does not exist"


def test_the_contracts_agree_on_which_modules_are_programs() -> None:
    programs = set(CONTRACTS["programs"]["modules"])
    assert set(CONTRACTS["no-cli"]["source_modules"]) == programs
    assert set(CONTRACTS["core"]["forbidden_modules"]) == programs | {CLI}
    installed = {name for name in PYPROJECT["tool"]["setuptools"]["package-dir"]}
    assert programs == installed, "every program installs from its own folder (package-dir) and is listed"
