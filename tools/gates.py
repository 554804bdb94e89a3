"""`make typecheck` and the import rules of `make lint`, over the package as it installs.

Both tools find modules by folder, so neither can see that trainer/ installs as
`streamtrain.trainer` (pyproject.toml's [tool.setuptools.package-dir]), and the editable
install's import hook is invisible to them. This lays out, under build/installed/, real folders
shaped like the installed package whose files are symlinks to the repository's, runs the tool
there with the settings in pyproject.toml, and prints every path as the repository's file, so an
error points at the file to edit.

    python tools/gates.py typecheck [mypy options]   mypy over streamtrain (programs included) and tests
    python tools/gates.py imports                    import-linter's contracts ([tool.importlinter])
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / "build" / "installed"
ROOT = "streamtrain"
BIN = Path(sys.executable).parent


def package_dirs() -> dict[str, str]:
    """The programs' folders by installed package name, e.g. streamtrain.trainer -> trainer."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return dict(pyproject["tool"]["setuptools"]["package-dir"])


def _mirror(source: Path, target: Path) -> None:
    """Real folders, symlinked .py files (tools that walk folders do not follow folder symlinks)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            _mirror(entry, target / entry.name)
        elif entry.suffix in (".py", ".pyi"):
            (target / entry.name).symlink_to(entry)


def lay_out() -> dict[str, str]:
    """Builds the tree; returns tree-relative path prefix -> repository-relative path prefix."""
    shutil.rmtree(TREE, ignore_errors=True)
    _mirror(REPO / ROOT, TREE / ROOT)
    _mirror(REPO / "tests", TREE / "tests")
    prefixes = {}
    for package, folder in package_dirs().items():
        parts = package.split(".")
        if parts[0] != ROOT or len(parts) != 2:
            sys.exit(f"gates: package-dir {package!r} is not a direct child of {ROOT}")
        _mirror(REPO / folder, TREE / ROOT / parts[1])
        prefixes[f"{ROOT}/{parts[1]}/"] = f"{folder}/"
    return prefixes


def run(command: list[str], prefixes: dict[str, str]) -> int:
    done = subprocess.run(command, cwd=TREE, capture_output=True, text=True)
    if prefixes:
        pattern = re.compile("(?m)^(" + "|".join(re.escape(p) for p in prefixes) + ")")
        done.stdout = pattern.sub(lambda m: prefixes[m.group(1)], done.stdout)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("typecheck", "imports"):
        sys.exit(__doc__)
    prefixes = lay_out()
    config = str(REPO / "pyproject.toml")
    if argv[0] == "typecheck":
        return run(
            [
                str(BIN / "mypy"),
                "--config-file",
                config,
                "--cache-dir",
                str(REPO / "build" / "mypy_cache"),
                "--python-executable",
                sys.executable,
                "-p",
                ROOT,
                "-p",
                "tests",
                *argv[1:],
            ],
            prefixes,
        )
    # lint-imports puts its working folder first on sys.path, so `streamtrain` is the tree's.
    return run([str(BIN / "lint-imports"), "--config", config, "--no-cache", "--no-logo", *argv[1:]], {})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
