"""Client settings every Kafka client of a process starts from: bootstrap, security (SASL/TLS from
the environment or a mounted Secret), and the producer's and consumer's delivery settings."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamtrain import logs

#: Prefix of the consumer groups of assign-only readers, which never commit: librdkafka still looks up
#: their group's coordinator, so each reading program holds Describe on this prefix (streamtrain.access).
READER_GROUP = "streamtrain-reader"


class KafkaSecurityError(ValueError):
    """The Kafka client security settings are incomplete or point at files that cannot be read."""


class KafkaSecurity(BaseSettings):
    """How every Kafka client of a process authenticates: from the environment (or a mounted Secret's
    files), never from a command line, so a password shows up in no process listing."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_KAFKA_", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL"
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*"
    )
    username: str | None = Field(None, description="SASL user (a Strimzi KafkaUser's name)")
    password_file: Path | None = Field(None, description="File holding the SASL password (e.g. a mounted Secret key)")
    ca_file: Path | None = Field(None, description="PEM file of the CA that signed the brokers' certificates")

    @model_validator(mode="after")
    def _complete(self) -> "KafkaSecurity":
        if self.security_protocol.startswith("SASL") and not (self.username and self.password_file):
            raise KafkaSecurityError(
                f"STREAMTRAIN_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "STREAMTRAIN_KAFKA_USERNAME and STREAMTRAIN_KAFKA_PASSWORD_FILE"
            )
        for what, path in (("password file", self.password_file), ("CA file", self.ca_file)):
            if path is not None and not path.is_file():
                raise KafkaSecurityError(f"Kafka {what} {path} does not exist or is not a file")
        return self

    def librdkafka(self) -> dict:
        cfg: dict = {"security.protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            cfg.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.username,
                    "sasl.password": self.password_file.read_text().strip(),
                }
            )
        if self.security_protocol.endswith("SSL") and self.ca_file:
            cfg["ssl.ca.location"] = str(self.ca_file)
        return cfg


#: librdkafka properties `-X` may not set, and what sets each instead: the programs' guarantees (exactly
#: once, offsets stored after the work), the broker address and the client's identity and security.
RESERVED_PROPERTIES = {
    "bootstrap.servers": "--kafka-bootstrap (STREAMTRAIN_KAFKA_BOOTSTRAP)",
    "metadata.broker.list": "--kafka-bootstrap (STREAMTRAIN_KAFKA_BOOTSTRAP)",
    "group.id": "each program's consumer group setting",
    "group.instance.id": "each program's instance id",
    "transactional.id": "the program (exactly-once scoring and preprocessing)",
    "enable.idempotence": "the program (retries never duplicate)",
    "isolation.level": "the program (it reads committed records only)",
    "enable.auto.commit": "the program (offsets are committed after the work)",
    "enable.auto.offset.store": "the program (offsets are stored after the work)",
    "security.protocol": "STREAMTRAIN_KAFKA_SECURITY_PROTOCOL",
    "sasl.mechanism": "STREAMTRAIN_KAFKA_SASL_MECHANISM",
    "sasl.mechanisms": "STREAMTRAIN_KAFKA_SASL_MECHANISM",
    "sasl.username": "STREAMTRAIN_KAFKA_USERNAME",
    "ssl.ca.location": "STREAMTRAIN_KAFKA_CA_FILE",
    "logger": "the program (librdkafka's lines become its structured log lines)",
}
#: Secrets come from files (a mounted Secret), never from a command line or a variable anyone can list.
_SECRET = re.compile(r"password|secret|\.pem$")


def check_property(key: str) -> str | None:
    """Why ``key`` may not be set with ``-X``, or None when it may."""
    if key in RESERVED_PROPERTIES:
        return f"set by {RESERVED_PROPERTIES[key]}"
    if _SECRET.search(key):
        return (
            "a secret: give it as a file (STREAMTRAIN_KAFKA_PASSWORD_FILE, a mounted Secret), never on a command line"
        )
    return None


class KafkaClientProperties(BaseSettings):
    """More librdkafka properties for every Kafka client of a process (kcat's and librdkafka's ``-X``)."""

    model_config = SettingsConfigDict(env_prefix="STREAMTRAIN_KAFKA_", extra="ignore")

    properties: dict[str, str] = Field(
        default_factory=dict,
        description="More librdkafka properties for every Kafka client of the Python programs, as a JSON "
        'object ({"socket.keepalive.enable": "true"}); `-X key=value` sets them. Properties the programs\' '
        "guarantees, address or security depend on are refused, and so are secrets",
    )

    @field_validator("properties")
    @classmethod
    def _allowed(cls, props: dict[str, str]) -> dict[str, str]:
        refused = {k: why for k in props if (why := check_property(k))}
        if refused:
            raise ValueError("; ".join(f"{k}: {why}" for k, why in refused.items()))
        return props


def load_properties() -> dict[str, str]:
    """The ``-X`` properties (STREAMTRAIN_KAFKA_PROPERTIES); a refused one ends the program with exit CONFIG."""
    from streamtrain.settings import load  # noqa: PLC0415 - settings imports modules that import this one

    return load(KafkaClientProperties).properties


@lru_cache(maxsize=1)
def _librdkafka_logger() -> logging.Logger:
    """librdkafka's own lines (connection failures, configuration warnings) as this process's structured log
    lines (``kafka_client``), not raw ``%3|…|FAIL|…`` text on stderr."""
    log = logs.get("librdkafka")

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            facility, client, message = (
                (*record.args, "", "", "")[:3] if isinstance(record.args, tuple) else ("", "", "")
            )
            log.log(record.levelno, "kafka_client", facility=facility, client=client, message=message or record.msg)

    logger = logging.Logger("librdkafka", logging.DEBUG)
    logger.addHandler(Forward())
    return logger


def client_config(bootstrap: str, **overrides) -> dict:
    """The base of every Kafka client: bootstrap plus this process's security settings, librdkafka's lines
    routed to the structured log, and the user's ``-X`` properties (over the programs' tuning defaults)."""
    return _with_properties(_base_config(bootstrap), overrides)


def _base_config(bootstrap: str) -> dict:
    return {"bootstrap.servers": bootstrap, **KafkaSecurity().librdkafka(), "logger": _librdkafka_logger()}


def _with_properties(cfg: dict, overrides: dict) -> dict:
    """The program's ``overrides`` over ``cfg``, then the user's ``-X`` properties over both (read once)."""
    return {**cfg, **overrides, **load_properties()}


def producer_config(bootstrap: str, **overrides) -> dict:
    """Idempotent producer: retries never duplicate or reorder within a partition."""
    cfg = {
        **_base_config(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 2 * 1024 * 1024,
    }
    return _with_properties(cfg, overrides)


def consumer_config(bootstrap: str, group_id: str, **overrides) -> dict:
    """Offsets are stored only after the work on a record is done (``store_offsets``)."""
    cfg = {
        **_base_config(bootstrap),
        "group.id": group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    return _with_properties(cfg, overrides)
