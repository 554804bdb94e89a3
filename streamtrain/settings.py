"""Typed settings, one env prefix (STREAMTRAIN_) for every program.

The same names work on a laptop (env vars or CLI flags) and in a Pod (env from the
operator). Program-specific classes extend ``CommonSettings``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamtrain import exitcodes, logs
from streamtrain.ingest_mapping import IngestMappingSettings
from streamtrain.modelsign import DEFAULT_MAX_VERSION, KEY_PATTERN_MAX, parse_public_keys

S = TypeVar("S", bound=BaseSettings)


def load(cls: type[S], **values) -> S:
    """A program's settings from its options (``values``) and the STREAMTRAIN_ environment; invalid ones end
    the program with exit code CONFIG and one structured line naming every bad field."""
    try:
        return cls(**values)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc'])) or cls.__name__}: {e['msg']}" for e in exc.errors()]
        logs.get("settings").error(
            "settings_invalid",
            settings=cls.__name__,
            problems=problems,
            fix="set the option or its STREAMTRAIN_ variable to a valid value",
        )
        raise SystemExit(exitcodes.CONFIG) from None


def field_option(cls: type[BaseSettings], name: str, **click_options):
    """A command-line option made from a settings field: its description and default are the field's, so
    they are written once (``click_options``: type, metavar)."""
    import click  # noqa: PLC0415 - settings load in programs that print no help

    field = cls.model_fields[name]
    default = "none" if field.default in (None, "") else field.default
    return click.option(
        f"--{name.replace('_', '-')}",
        default=None,
        help=f"{field.description} (env STREAMTRAIN_{name.upper()}; default {default}).",
        **click_options,
    )


def settings_env(settings: BaseSettings, **extra) -> dict[str, str]:
    """This process's environment plus ``settings`` (and ``extra`` fields) as STREAMTRAIN_ variables:
    how a parent hands its settings to a child program (demo, tests, bench)."""
    env = dict(os.environ)
    for name, value in {**settings.model_dump(), **extra}.items():
        if value is not None:
            # Lower-case booleans: the JVM scorer reads the same variables.
            env[f"STREAMTRAIN_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


class LogSettings(BaseSettings):
    """How every program logs: the only settings `streamtrain` itself reads before a subcommand runs."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_", extra="ignore")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level: DEBUG, INFO, WARNING or ERROR"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log lines: json, console, or auto (console on a terminal, json otherwise and in a Pod)",
    )

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object, info) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if info.field_name == "log_level" else value.lower()


class CommonSettings(LogSettings):
    """Connection and topic settings shared by every StreamTrain program."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_", extra="ignore")

    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(1883, description="MQTT broker TCP port")
    topic_raw: str = Field("streamtrain.telemetry.raw", description="Validated device telemetry, keyed by device id")
    topic_deadletter: str = Field("streamtrain.deadletter", description="Rejected input with the reason in headers")
    topic_features: str = Field("streamtrain.telemetry.features", description="Preprocessed feature records")
    topic_windows: str = Field("streamtrain.telemetry.windows", description="Per-device tumbling-window aggregates")
    topic_sequences: str = Field(
        "streamtrain.telemetry.sequences",
        description="Per-device windows of the last N feature records (windowed models)",
    )
    topic_models: str = Field("streamtrain.models", description="Compacted topic carrying model versions")
    topic_scores: str = Field("streamtrain.scores", description="Anomaly scores, one per feature record")
    metrics_port: int = Field(0, description="Prometheus /metrics and /healthz port; 0 disables the server")
    model_verify_keys: str = Field(
        "",
        description=(
            "Ed25519 public keys (base64 of the 32 raw bytes, comma-separated; several while a key is rotated): "
            "a model version is served, and numbered after, only if its manifest is signed by one of them; "
            "empty: signatures are not checked"
        ),
    )
    model_max_version: int = Field(
        DEFAULT_MAX_VERSION,
        ge=1,
        lt=KEY_PATTERN_MAX,
        description=(
            "Highest model version number accepted: a version claiming more is refused (logged, counted) and "
            "ignored for numbering; the trainer refuses to number past it"
        ),
    )

    @field_validator("model_verify_keys")
    @classmethod
    def _verify_keys_parse(cls, value: str) -> str:
        parse_public_keys(value)  # SigningKeyError is a ValueError: reported like any invalid setting
        return value


class StackSettings(CommonSettings, IngestMappingSettings):
    """Where the local broker stack keeps its jars, data and logs."""

    home: Path = Field(Path(".streamtrain"), description="Project-local directory for jars, broker data and logs")
    jars: Path | None = Field(None, description="Where resolved broker jars are cached; default <home>/lib")
    bind_host: str = Field(
        "127.0.0.1",
        description=(
            "Address the brokers listen on and advertise (Kafka's controllers stay on 127.0.0.1): 127.0.0.1 "
            "serves this machine only; a bridge's address serves containers on it too (a test node's Pods)"
        ),
    )
    kafka_port: int = Field(9092, description="Kafka client listener port on bind_host")
    kafka_controller_port: int = Field(
        0, description=("KRaft controller port (of the first node); 0 means kafka_port + the number of brokers")
    )
    kafka_brokers: int = Field(
        1,
        ge=1,
        le=9,
        description=(
            "Kafka nodes (combined broker and controller, a quorum of all of them) on ports kafka_port, "
            "kafka_port+1, ...; with 3 or more, topics get 3 replicas and min.insync.replicas=2. "
            "Chosen when the Kafka data is first made"
        ),
    )
    kafka_version: str = Field("3.9.1", description="Apache Kafka version resolved from Maven Central")
    hivemq_version: str = Field("2025.5", description="HiveMQ CE embedded version resolved from Maven Central")
    partitions: int = Field(6, description="Partitions of the raw, features and scores topics")
    retention_hours: int = Field(72, description="Retention of the stream topics")
    ready_timeout_s: float = Field(120.0, description="How long `stack up` waits for both brokers to be ready")
    kafka_auth: Literal["none", "scram"] = Field(
        "none",
        description=(
            "none: a PLAINTEXT listener; scram: SASL/SCRAM-SHA-512 over TLS (a self-signed certificate made "
            "on first start), ACLs enforced, an admin user; add program users with `stack kafka-user`"
        ),
    )
    ingest: Literal["bridge", "extension"] = Field(
        "bridge",
        description=(
            "bridge: HiveMQ as it is, `streamtrain bridge` moves telemetry to Kafka; extension: StreamTrain's HiveMQ "
            "extension (bridge/hivemq-extension, built with Maven) validates and writes each PUBLISH to Kafka inside "
            "the broker before its PUBACK, and no bridge is needed"
        ),
    )
    mqtt_tls: bool = Field(
        False,
        description="HiveMQ listens with TLS only, on mqtt_port, with a self-signed certificate made on first start "
        "(<home>/hivemq/secrets): MQTT clients set STREAMTRAIN_MQTT_CA_FILE to its ca.pem (`stack status` names it)",
    )
    ingest_metrics_port: int = Field(0, description="Prometheus port of the ingestion extension (0: none)")
    broker_metrics_port: int = Field(
        0,
        description="Prometheus port of HiveMQ's own counters: messages it dropped, publishes, connections "
        "(0: none; `stack up --monitoring`: 9404)",
    )
    mqtt_users_file: Path | None = Field(
        None,
        description=(
            "MQTT credentials (`streamtrain stack passwd`); when set, HiveMQ refuses clients not in it, "
            "devices publish only to devices/<user>/telemetry and only bridges subscribe"
        ),
    )
