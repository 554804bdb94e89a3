"""`make version`: the release version is written once, in streamtrain/__init__.py (`__version__`);
pyproject.toml reads it (setuptools dynamic version). Every other file that has to carry it as text
(the chart, the Java scorer's pom, the generated CRD, examples and docs) is listed in CARRIERS and
checked here, or rewritten by `set`.

    python tools/version.py             print the version; exit 1 naming each file that disagrees
    python tools/version.py set 0.2.0   write a new version into the source and every carrier
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = ("streamtrain/__init__.py", r'^__version__ = "(?P<v>[^"]+)"$')
V = r"(?P<v>\d+\.\d+\.\d+[0-9A-Za-z.+-]*)"
#: (file, pattern whose group `v` is the version, how many matches the file must have)
CARRIERS = [
    ("charts/streamtrain/Chart.yaml", rf"^version: {V}$", 1),
    ("charts/streamtrain/Chart.yaml", rf'^appVersion: "{V}"$', 1),
    ("scorer/streams/pom.xml", rf"<artifactId>streamtrain-scorer-streams</artifactId>\s*<version>{V}</version>", 1),
    # generated from operator/streamtrain_operator/crd.py, which reads __version__ (make kube-crd)
    ("charts/streamtrain/crds/streamingtrainings.yaml", rf"repository: ghcr.io/streamtrain/streamtrain\s+tag: {V}$", 1),
    ("charts/streamtrain/crds/streamingtrainings.yaml", rf"description: Image tag\s+minLength: 1\s+default: {V}$", 1),
    ("examples/full.yaml", rf"repository: ghcr.io/streamtrain/streamtrain\s+tag: {V}$", 1),
    ("examples/secure.yaml", rf"streamtrain-hivemq:{V}\b", 1),
    ("docs/kubernetes.md", rf"streamtrain-hivemq:{V}\b", 1),
    ("images/README.md", rf"streamtrain-hivemq:{V}\b", 1),
]


def source_version() -> str:
    path, pattern = SOURCE
    found = re.search(pattern, (REPO / path).read_text(), re.MULTILINE)
    if not found:
        sys.exit(f"version: no __version__ in {path}")
    return found.group("v")


def disagreements(version: str) -> list[str]:
    """One line per carrier that does not hold ``version`` (or holds it a different number of times)."""
    out = []
    for path, pattern, count in CARRIERS:
        found = [m.group("v") for m in re.finditer(pattern, (REPO / path).read_text(), re.MULTILINE)]
        if len(found) != count:
            out.append(f"{path}: expected {count} match(es) of {pattern!r}, found {len(found)}")
        out += [f"{path}: {v} (the source says {version})" for v in found if v != version]
    return out


def set_version(new: str) -> None:
    for path, pattern in [SOURCE[:2], *[(p, pat) for p, pat, _ in CARRIERS]]:
        file = REPO / path
        text = file.read_text()
        file.write_text(re.sub(pattern, lambda m: m.group(0).replace(m.group("v"), new), text, flags=re.MULTILINE))


def main(argv: list[str]) -> int:
    if argv[:1] == ["set"] and len(argv) == 2:
        set_version(argv[1])
    elif argv:
        sys.exit(__doc__)
    version = source_version()
    problems = disagreements(version)
    for line in problems:
        print(f"version mismatch: {line}", file=sys.stderr)
    print(version)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
