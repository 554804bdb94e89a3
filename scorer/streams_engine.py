"""`streamtrain score --engine kafka-streams`: build the Kafka Streams scorer (scorer/streams,
Maven) when its jar is missing or older than its sources, then run it in place of this
process with the same STREAMTRAIN_ settings, so signals and the exit code are the JVM's.

A build runs the scorer's unit tests (src/test: its topology on Kafka's TopologyTestDriver with
real ONNX models, a few seconds) unless it is the one `score` makes on the way to starting."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from streamtrain import logs
from streamtrain.maven import BuildError, package, stale
from streamtrain.settings import CommonSettings, settings_env

log = logs.get("scorer.streams")

MODULE = Path(__file__).resolve().parent / "streams"
JAR = MODULE / "target" / "streamtrain-scorer-streams.jar"


def build(force: bool = False, tests: bool = True) -> Path:
    """The runnable jar (dependencies in target/lib), built after its unit tests pass (``tests``) when it is
    missing or older than its sources; Maven runs offline first, online if the cache lacks something."""
    if not force and not stale(JAR, MODULE, MODULE / "src"):
        return JAR
    options = [] if tests else ["-DskipTests"]
    return package(MODULE, JAR, "the Kafka Streams scorer", "building_streams_scorer", *options)


def java_command(jar: Path) -> list[str]:
    java = shutil.which("java")
    if not java:
        raise BuildError("java is not on PATH; the Kafka Streams scorer needs Java 17")
    return [java, "-jar", str(jar)]


def exec_scorer(settings: CommonSettings) -> None:
    """Replace this process with the JVM scorer (never returns)."""
    cmd = java_command(build(tests=False))
    log.info("starting_streams_scorer", jar=str(JAR))
    os.execve(cmd[0], cmd, settings_env(settings))
