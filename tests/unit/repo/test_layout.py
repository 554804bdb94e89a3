"""tests/ follows the code: a module's unit tests are found from its path, and the journeys (end to end,
faults, Kubernetes, node, images, skaffold) keep their own folders and markers.

- ``tests/unit/<folder>/test_<name>.py`` holds the unit tests of ``<folder>/<name>.py`` (or of the package
  ``<folder>/<name>/``); the operator's ``operator/streamtrain_operator/`` is ``tests/unit/streamtrain_operator/``
  (no package may be named ``operator``), and checks over the whole repository live in ``tests/unit/repo/``.
- A test outside ``tests/unit/`` carries a broker marker; a test inside carries none.

Markers are read from the source (module ``pytestmark``, class and function decorators, ``pytest.param(marks=)``)
so the check costs no import of the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import BROKER_MARKERS, REPO

TESTS = REPO / "tests"
UNIT = TESTS / "unit"
#: A journey's marker: what `make test-unit` leaves out (skaffold tests also carry kube and node).
MARKERS = frozenset((*BROKER_MARKERS, "skaffold"))
#: Folders of tests/unit/ that stand for another path of the repository.
ALIASES = {"streamtrain_operator": Path("operator/streamtrain_operator")}
#: tests/unit/repo/: checks over the whole repository, mirroring no module.
REPO_CHECKS = "repo"


def mirrored(test_file: Path, root: Path = REPO) -> Path | None:
    """The module or package of ``root`` whose unit tests ``test_file`` (under tests/unit/) holds, or None."""
    rel = test_file.relative_to(root / "tests" / "unit")
    folder = Path(*rel.parts[:-1])
    if folder.parts and folder.parts[0] in ALIASES:
        folder = ALIASES[folder.parts[0]].joinpath(*folder.parts[1:])
    name = rel.name.removeprefix("test_").removesuffix(".py")
    for candidate in (folder / f"{name}.py", folder / name):
        if (root / candidate).is_file() or (root / candidate / "__init__.py").is_file():
            return candidate
    return None


def _mark_names(node: ast.AST) -> set[str]:
    """Every ``pytest.mark.<name>`` / ``mark.<name>`` written inside ``node``."""
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Attribute) and (
            (isinstance(n.value, ast.Attribute) and n.value.attr == "mark")
            or (isinstance(n.value, ast.Name) and n.value.id == "mark")
        ):
            names.add(n.attr)
    return names


def _pytestmark(body: list[ast.stmt]) -> set[str]:
    return {
        m
        for s in body
        if isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in s.targets)
        for m in _mark_names(s.value)
    }


def markers_of(path: Path) -> dict[str, set[str]]:
    """Each test function of a file (``Class::name`` inside classes) and the journey markers it carries."""
    tree = ast.parse(path.read_text(), str(path))
    module = _pytestmark(tree.body)
    found: dict[str, set[str]] = {}

    def functions(body: list[ast.stmt], prefix: str, inherited: set[str]) -> None:
        for s in body:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name.startswith("test"):
                marks = inherited | {m for d in s.decorator_list for m in _mark_names(d)}
                found[prefix + s.name] = marks & MARKERS
            elif isinstance(s, ast.ClassDef) and s.name.startswith("Test"):
                own = {m for d in s.decorator_list for m in _mark_names(d)} | _pytestmark(s.body)
                functions(s.body, f"{prefix}{s.name}::", inherited | own)

    functions(tree.body, "", module)
    return found


def layout_errors(root: Path = REPO) -> list[str]:
    """What breaks the layout under ``root``/tests, each with what to do."""
    tests, unit = root / "tests", root / "tests" / "unit"
    errors = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(root)
        inside = unit in path.parents
        if inside and path.parent != unit / REPO_CHECKS and mirrored(path, root) is None:
            errors.append(
                f"{rel}: mirrors no module or package: tests/unit/<folder>/test_<name>.py holds the unit tests of "
                f"<folder>/<name>.py or <folder>/<name>/ (tests/unit/streamtrain_operator/ for "
                f"operator/streamtrain_operator/); move it to the module it exercises, or to tests/unit/repo/ "
                f"if it checks the whole repository"
            )
        if inside and path.parent.parts[-1] == "operator":
            errors.append(f"{rel}: no folder named operator (it would shadow the standard library's module)")
        for name, marks in markers_of(path).items():
            if inside and marks:
                errors.append(
                    f"{rel}::{name} carries {', '.join(sorted(marks))}: a journey test belongs in its folder "
                    f"outside tests/unit/ (tests/score, tests/ingest, tests/k8s, tests/faults, ...)"
                )
            elif not inside and not marks:
                errors.append(
                    f"{rel}::{name} carries none of the markers {', '.join(sorted(MARKERS))}: a unit test goes to "
                    f"tests/unit/<folder>/test_<name>.py beside the unit tests of the module it exercises; "
                    f"a test that needs brokers, a control plane or images gets its marker"
                )
    return errors


def test_the_tests_follow_the_code_and_the_journeys_keep_their_markers():
    errors = layout_errors()
    assert not errors, "\n" + "\n".join(errors)


def test_every_folder_of_tests_is_a_package():
    folders = {
        d
        for f in [*TESTS.rglob("test_*.py"), *TESTS.rglob("conftest.py")]
        for d in f.parents
        if TESTS in [d, *d.parents]
    }
    missing = sorted(str(d.relative_to(REPO)) for d in folders if not (d / "__init__.py").is_file())
    assert not missing, f"test folders without __init__.py (module names are tests.<folder>...): {missing}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for module in (
        "scorer/models.py",
        "streamtrain/kafka/admin.py",
        "operator/streamtrain_operator/render/__init__.py",
    ):
        (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / module).write_text("")
    return tmp_path


def write(root: Path, rel: str, text: str = "def test_x():\n    pass\n") -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text)


def test_unit_tests_that_mirror_modules_packages_the_operator_and_repo_checks_pass(repo):
    for rel in (
        "tests/unit/scorer/test_models.py",
        "tests/unit/streamtrain/kafka/test_admin.py",
        "tests/unit/streamtrain_operator/test_render.py",
        "tests/unit/repo/test_anything.py",
    ):
        write(repo, rel)
    write(
        repo,
        "tests/score/test_scorer_e2e.py",
        "import pytest\n\npytestmark = pytest.mark.e2e\n\ndef test_x():\n    pass\n",
    )
    assert layout_errors(repo) == []


def test_a_unit_test_file_that_mirrors_nothing_is_named_with_what_to_do(repo):
    write(repo, "tests/unit/scorer/test_watcher.py")
    write(repo, "tests/unit/operator/test_render.py")
    errors = layout_errors(repo)
    assert errors[0].startswith("tests/unit/operator/test_render.py: mirrors no module")
    assert "no folder named operator" in errors[1]
    assert errors[2].startswith("tests/unit/scorer/test_watcher.py: mirrors no module or package")
    assert "move it to the module it exercises" in errors[2]


def test_an_unmarked_test_outside_unit_and_a_marked_one_inside_are_named(repo):
    write(
        repo,
        "tests/score/test_mixed.py",
        "import pytest\n\n@pytest.mark.e2e\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n",
    )
    write(
        repo,
        "tests/unit/scorer/test_models.py",
        "import pytest\n\nclass TestWatcher:\n    @pytest.mark.kube\n    def test_c(self):\n        pass\n",
    )
    errors = layout_errors(repo)
    assert len(errors) == 2
    assert errors[0].startswith("tests/score/test_mixed.py::test_b carries none of the markers")
    assert "tests/unit/<folder>/test_<name>.py" in errors[0]
    assert errors[1].startswith("tests/unit/scorer/test_models.py::TestWatcher::test_c carries kube")
