"""Client settings every Kafka client of a process starts from: bootstrap, security (SASL/TLS from
the environment or a mounted Secret), and the producer's and consumer's delivery settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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


def client_config(bootstrap: str, **overrides) -> dict:
    """The base of every Kafka client: bootstrap plus this process's security settings."""
    return {"bootstrap.servers": bootstrap, **KafkaSecurity().librdkafka(), **overrides}


def producer_config(bootstrap: str, **overrides) -> dict:
    """Idempotent producer: retries never duplicate or reorder within a partition."""
    cfg = {
        **client_config(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.max.bytes": 2 * 1024 * 1024,
    }
    cfg.update(overrides)
    return cfg


def consumer_config(bootstrap: str, group_id: str, **overrides) -> dict:
    """Offsets are stored only after the work on a record is done (``store_offsets``)."""
    cfg = {
        **client_config(bootstrap),
        "group.id": group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    cfg.update(overrides)
    return cfg
