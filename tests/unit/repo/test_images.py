"""images/Dockerfile, checked structurally (no Docker engine here, so it is not built in tests):
pinned base, multi-stage, non-root numeric user matching the Pods, read-only-root friendly, and
every path it copies exists."""

from __future__ import annotations

import importlib.util
import re
import tomllib

import pytest

from streamtrain.operator.render import hivemq, objects
from tests.k8s.conftest import ROOT, assert_pinned_multi_stage_non_root

DOCKERFILE = (ROOT / "images/Dockerfile").read_text()
_spec = importlib.util.spec_from_file_location("hashed_requirements", ROOT / "tools/images/hashed_requirements.py")
hashed_requirements = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hashed_requirements)
INSTRUCTIONS = [line for line in DOCKERFILE.splitlines() if line and not line.startswith("#")]


def test_base_is_pinned_to_a_patch_version():
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", base), base
    assert "latest" not in base


def test_multi_stage_and_non_root():
    stages = re.findall(r"^FROM \S+ AS (\w+)$", DOCKERFILE, re.M)
    assert stages == ["build", "runtime"]
    runtime = DOCKERFILE.split("AS runtime", 1)[1]
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    user = re.search(r"^USER (\S+)$", runtime, re.M).group(1)
    uid = re.search(r"^ARG UID=(\d+)$", runtime, re.M).group(1)
    assert user == "${UID}:${UID}" and int(uid) == objects.UID != 0
    assert "pip" not in runtime.split("USER")[0].replace("PIP_", ""), "no installs in the runtime stage"


def test_read_only_root_filesystem_friendly():
    assert "PYTHONDONTWRITEBYTECODE=1" in DOCKERFILE
    assert "HOME=/tmp" in DOCKERFILE and "MPLCONFIGDIR=/tmp" in DOCKERFILE


def test_dependencies_are_the_lock_with_its_hashes_before_any_source():
    assert "COPY requirements.lock" in DOCKERFILE and "--require-hashes" in DOCKERFILE
    deps = DOCKERFILE.index("--require-hashes")
    assert deps < DOCKERFILE.index("COPY streamtrain ./streamtrain"), "a source edit must not reinstall them"
    assert "pip install --no-deps" in DOCKERFILE[deps:], "the project itself adds no unhashed package"


def _report(*packages: tuple[str, str]) -> dict:
    return {"install": [{"metadata": {"name": n, "version": v}} for n, v in packages]}


LOCK = """# via comments and blank lines are not entries

confluent-kafka==2.6.1 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via streamtrain (pyproject.toml)
pyyaml==6.0.2 \\
    --hash=sha256:cc
-e file:///src
"""


def test_image_requirements_are_the_lock_entries_of_the_resolution():
    out = hashed_requirements.requirements(
        LOCK, _report(("confluent_kafka", "2.6.1"), ("PyYAML", "6.0.2"), ("streamtrain", "0.1.0"))
    )
    assert out.splitlines() == [
        "confluent-kafka==2.6.1 \\",
        "    --hash=sha256:aa \\",
        "    --hash=sha256:bb",
        "pyyaml==6.0.2 \\",
        "    --hash=sha256:cc",
    ]
    assert "pyyaml" not in hashed_requirements.requirements(LOCK, _report(("confluent-kafka", "2.6.1")))


def test_a_package_the_lock_does_not_pin_stops_the_image_build():
    with pytest.raises(SystemExit, match=r"pyyaml 6\.0\.3 \(lock: 6\.0\.2\).*requests 2\.0 \(lock: none\)"):
        hashed_requirements.requirements(LOCK, _report(("pyyaml", "6.0.3"), ("requests", "2.0")))


def test_stubs_lay_out_every_package_where_setuptools_looks(tmp_path, monkeypatch):
    version = tmp_path / "version.py"
    version.write_text('__version__ = "9.9"\n')
    monkeypatch.chdir(tmp_path)
    hashed_requirements.stubs(ROOT / "pyproject.toml", version)
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        assert (tmp_path / folder / "__init__.py").is_file(), package
    assert (tmp_path / "operator/streamtrain_operator/render/__init__.py").is_file()
    assert (tmp_path / "streamtrain/kafka/__init__.py").read_text() == ""
    assert (tmp_path / "streamtrain/__init__.py").read_text() == version.read_text()


def test_copied_paths_exist():
    for line in INSTRUCTIONS:
        m = re.match(r"^COPY (?!--from)(.+) (\S+)$", line)
        if m:
            for src in m.group(1).split():
                assert (ROOT / src).exists(), src


def test_entrypoint_and_operator_paths_match_the_chart():
    assert 'ENTRYPOINT ["streamtrain"]' in DOCKERFILE
    deployment = (ROOT / "charts/streamtrain/templates/deployment.yaml").read_text()
    assert "- streamtrain.operator.handlers" in deployment and "COPY operator ./operator" in DOCKERFILE
    assert "operator" in re.search(r"ARG EXTRAS=(\S+)", DOCKERFILE).group(1).split(",")


def test_streams_scorer_image_is_pinned_non_root_and_copies_what_exists():
    text = (ROOT / "images/scorer-streams.Dockerfile").read_text()
    assert_pinned_multi_stage_non_root(text)
    assert '"-jar", "/app/streamtrain-scorer-streams.jar"' in text


def test_hivemq_image_folders_are_writable_on_a_root_owned_volume():
    """podman's --tmpfs (and any volume whose root keeps the image folder's mode) is owned by root:
    the launcher image's data and log folders are 1777, like /tmp, so uid 10001 can lock data.lock."""
    text = (ROOT / "images/hivemq.Dockerfile").read_text()
    assert f"chmod 1777 {hivemq.WRITES['data']} {hivemq.WRITES['log']}" in text


def test_every_module_the_operator_imports_is_installed_with_the_operator_extra():
    """Each third-party module that operator/ imports comes with the base install plus the `operator`
    extra (so an image built with EXTRAS=operator runs it, without TensorFlow), and the Dockerfile's
    default EXTRAS include it."""
    import ast
    import sys
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def requires(dist: str, extra: str = "") -> list[str]:  # what pip installs for it (markers evaluated)
        reqs = [Requirement(r) for r in metadata.requires(dist) or []]
        return [canonicalize_name(r.name) for r in reqs if r.marker is None or r.marker.evaluate({"extra": extra})]

    assert "operator" in re.search(r"ARG EXTRAS=(\S+)", DOCKERFILE).group(1).split(",")
    wanted = requires("streamtrain", "operator")
    installed: set[str] = {"streamtrain"}
    while wanted:
        name = wanted.pop()
        if name not in installed:
            installed.add(name)
            wanted += requires(name)
    assert "tensorflow-cpu" not in installed
    providers = metadata.packages_distributions()
    for path in (ROOT / "operator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else []
            )
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - {"streamtrain"}:
                dists = {canonicalize_name(d) for d in providers.get(top, [])}
                assert dists & installed, f"{path.name} imports {top} ({dists or 'not installed'}): not in the image"
