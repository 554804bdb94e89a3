"""Hash-pinned dependencies of one image: the lock's entries for exactly what pip resolves.

requirements.lock (the one lock of the repository) carries every package's hashes, test tools
included. An image installs a subset (the extras it was built with), and pip's hash-checking mode
takes hashes only from requirements, never from constraints. So the Dockerfile lets pip resolve
the project against the lock's pins (``pip install --dry-run --report``) and installs what this
prints: the lock's own lines, hashes included, for every package of that resolution. A package
the lock does not pin, or pins at another version, stops the build.

The resolution needs only pyproject.toml: ``stubs`` lays out its packages as empty folders (plus
the version file), so the dependency layer is built before any source is copied and survives
source edits (a rebuild after an edit reinstalls nothing).

    python hashed_requirements.py stubs PYPROJECT VERSION_FILE
    python hashed_requirements.py requirements LOCK REPORT

Standard library only: it runs in the image's build stage before anything is installed.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(text: str) -> dict[str, tuple[str, str]]:
    """name -> (version, its lock entry: ``name==version`` and its ``--hash`` lines, comments dropped)."""
    entries: dict[str, tuple[str, str]] = {}
    key = None
    for line in text.splitlines():
        head = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if head:
            key = normalized(head.group(1))
            entries[key] = (head.group(2), line)
        elif key is not None and line.strip().startswith("--hash="):
            version, entry = entries[key]
            entries[key] = (version, f"{entry}\n{line}")
        else:
            key = None
    return entries


def requirements(lock: str, report: dict, project: str = "streamtrain") -> str:
    entries = lock_entries(lock)
    lines, missing = [], []
    for item in report["install"]:
        name, version = normalized(item["metadata"]["name"]), item["metadata"]["version"]
        if name == project:
            continue
        if name not in entries or entries[name][0] != version:
            missing.append(f"{name} {version} (lock: {entries[name][0] if name in entries else 'none'})")
            continue
        lines.append(entries[name][1])
    if missing:
        raise SystemExit(f"error: not pinned by requirements.lock: {', '.join(missing)} (regenerate the lock)")
    return "\n".join(lines) + "\n"


def stubs(pyproject: Path, version_file: Path) -> None:
    """Every package of [tool.setuptools] as an empty folder where package-dir puts it."""
    setuptools = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    for package in setuptools["packages"]:
        parent = next((p for p in sorted(mapped, key=len, reverse=True) if f"{package}.".startswith(f"{p}.")), None)
        folder = Path(mapped[parent], *package[len(parent) + 1 :].split(".")) if parent else Path(*package.split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    root = Path(setuptools["packages"][0].split(".")[0])
    (root / "__init__.py").write_text(version_file.read_text())


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "stubs":
        stubs(Path(argv[1]), Path(argv[2]))
    elif len(argv) == 3 and argv[0] == "requirements":
        sys.stdout.write(requirements(Path(argv[1]).read_text(), json.loads(Path(argv[2]).read_text())))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
