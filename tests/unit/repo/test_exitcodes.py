"""Exit codes are written once per language (streamtrain/exitcodes.py, the Kafka Streams scorer's
ExitCodes.java): the two agree, no program exits with a bare number, and each code a program
documents is what a real failure of that program returns."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from streamtrain import exitcodes
from streamtrain.scorer.streams_engine import MODULE, build, java_command
from tests.programs import STREAMTRAIN, settings_env

ROOT = Path(__file__).resolve().parents[3]
JAVA_CODES = MODULE / "src" / "main" / "java" / "streamtrain" / "scorer" / "ExitCodes.java"
PYTHON_CODES = {k: v for k, v in vars(exitcodes).items() if k.isupper() and isinstance(v, int)}


def test_python_and_java_exit_codes_are_the_same_names_and_values():
    java = {name: int(value) for name, value in re.findall(r"static final int (\w+) = (\d+);", JAVA_CODES.read_text())}
    assert java == PYTHON_CODES
    assert len(set(PYTHON_CODES.values())) == len(PYTHON_CODES), "one meaning per code"


def test_no_program_exits_with_a_bare_number():
    exits = re.compile(r"sys\.exit\(\d|SystemExit\(\d|System\.exit\(\d")
    returns = re.compile(r"return (rc = )?\d+;|return \d+$", re.M)  # the programs' run() return their exit code
    runners = [ROOT / "scorer" / "app.py", ROOT / "preprocessor" / "app.py", *(MODULE / "src" / "main").rglob("*.java")]
    programs = [*ROOT.glob("*/cli.py"), ROOT / "scorer" / "evaluate.py", *ROOT.glob("streamtrain/**/*.py"), *runners]
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in programs for m in exits.finditer(p.read_text())]
    found += [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in runners[:2] for m in returns.finditer(p.read_text())]
    java_main = (MODULE / "src" / "main" / "java" / "streamtrain" / "scorer" / "Main.java").read_text()
    found += [f"Main.java: {m.group(0)}" for m in returns.finditer(java_main)]
    assert not found, found


def _run(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def _env(**extra) -> dict:
    from streamtrain.settings import CommonSettings

    return settings_env(CommonSettings(), **extra)


@pytest.mark.parametrize(
    "program,bad",
    [
        (["score"], {"batch_size": "0"}),
        (["bridge"], {"connections": "many"}),
        (["preprocess"], {"guarantee": "sometimes"}),
        (["simulate", "--count", "1"], {"rate": "fast"}),
    ],
)
def test_invalid_settings_exit_config_before_touching_a_broker(program, bad):
    # Port 9 (discard) has no broker: a program that got as far as connecting would hang or fail differently.
    done = _run(STREAMTRAIN + program, _env(kafka_bootstrap="127.0.0.1:9", mqtt_port=9, **bad))
    assert done.returncode == exitcodes.CONFIG, done.stdout + done.stderr
    assert '"settings_invalid"' in done.stderr and next(iter(bad)) in done.stderr


def test_an_invalid_preprocessing_spec_exits_config(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("features: [temperature]\nderived: [{name: x, expr: 'label * 2'}]\n")
    done = _run(STREAMTRAIN + ["preprocess", "--check", "--spec", str(spec)], _env())
    assert done.returncode == exitcodes.CONFIG and "invalid preprocessing spec" in done.stderr, done.stderr


def test_the_streams_scorer_exits_config_on_invalid_settings():
    done = _run(java_command(build(tests=False)), _env(kafka_bootstrap="127.0.0.1:9", guarantee="sometimes"))
    assert done.returncode == exitcodes.CONFIG, done.stdout + done.stderr
    assert '"settings_invalid"' in done.stdout + done.stderr and "sometimes" in done.stdout + done.stderr
