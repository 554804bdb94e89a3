"""Who may do what on Kafka: the topics, consumer groups and transactional ids each program uses.

One table, two renderings: Strimzi ``KafkaUser`` ACLs on Kubernetes (``operator/``) and
``AdminClient.create_acls`` bindings on the local stack (``streamtrain stack kafka-user``), so
the least privilege a program runs with is the same everywhere and is tested against a real
broker. A program's consumer group doubles as the prefix of its transactional ids
(``<group>.<instance>``) and of its helper groups (``<group>-restore``).
"""
from __future__ import annotations

from dataclasses import dataclass

from streamtrain.kafka import READER_GROUP
from streamtrain.settings import CommonSettings

#: Programs that talk to Kafka and the group each uses by default (the simulator speaks MQTT only).
DEFAULT_GROUPS = {
    "bridge": None,
    "preprocess": "streamtrain-preprocess",
    "train": None,
    "score": "streamtrain-scorer",
    "score-streams": "streamtrain-scorer",
    "evaluate": None,
}
PROGRAMS = tuple(DEFAULT_GROUPS)


@dataclass(frozen=True)
class Grant:
    """Operations allowed on one resource; names and casing as in Strimzi's ``KafkaUser`` ACLs."""

    resource: str  # topic | group | transactionalId | cluster
    name: str = ""
    pattern: str = "literal"  # literal | prefix
    operations: tuple[str, ...] = ()


def _read(*topics: str) -> list[Grant]:
    return [Grant("topic", t, operations=("Read", "Describe")) for t in topics]


def _write(*topics: str) -> list[Grant]:
    return [Grant("topic", t, operations=("Write", "Describe")) for t in topics]


#: Assign-only readers (training ranges, model versions, scores) still look up their group's coordinator.
_READER = [Grant("group", READER_GROUP, "prefix", ("Describe",))]


def _group(group: str) -> list[Grant]:
    # Prefix: the group itself, its helper groups and its transactional ids share the name.
    return [Grant("group", group, "prefix", ("Read", "Describe")),
            Grant("transactionalId", group, "prefix", ("Write", "Describe"))]


def grants(program: str, s: CommonSettings, group: str | None = None) -> list[Grant]:
    """Everything ``program`` needs and nothing more, one grant per resource; ``group`` overrides its
    default consumer group."""
    merged: dict[tuple, list[str]] = {}
    for g in _needs(program, s, group):
        ops = merged.setdefault((g.resource, g.name, g.pattern), [])
        ops += [op for op in g.operations if op not in ops]
    return [Grant(r, n, p, tuple(ops)) for (r, n, p), ops in merged.items()]


def _needs(program: str, s: CommonSettings, group: str | None) -> list[Grant]:
    if program not in DEFAULT_GROUPS:
        raise ValueError(f"unknown program {program!r}; one of {', '.join(PROGRAMS)}")
    group = group or DEFAULT_GROUPS[program]
    # Idempotent producers need no cluster-wide IdempotentWrite: Write on a topic suffices (KIP-679).
    produce: list[Grant] = []
    if program == "bridge":
        return [*_write(s.topic_raw, s.topic_deadletter), *produce]
    if program == "preprocess":
        # Reads back its own committed features to rebuild the readings it has seen (dedup).
        return [*_read(s.topic_raw, s.topic_features),
                *_write(s.topic_features, s.topic_windows, s.topic_sequences, s.topic_deadletter),
                *_group(group), *produce]
    if program == "train":
        # Reads the models topic for the parent version; produces model versions.
        return [*_read(s.topic_features, s.topic_windows, s.topic_sequences, s.topic_models),
                *_write(s.topic_models), *_READER, *produce]
    if program in ("score", "score-streams"):
        return [*_read(s.topic_features, s.topic_sequences, s.topic_models),
                *_write(s.topic_scores, s.topic_deadletter), *_group(group), *_READER, *produce]
    # evaluate: reads scores and the model versions they name, writes nothing.
    return [*_read(s.topic_scores, s.topic_models), *_READER]


def strimzi_acls(program: str, s: CommonSettings, group: str | None = None) -> list[dict]:
    """The ``spec.authorization.acls`` of a Strimzi ``KafkaUser`` for ``program``."""
    out = []
    for g in grants(program, s, group):
        resource = {"type": g.resource} if g.resource == "cluster" else \
            {"type": g.resource, "name": g.name, "patternType": g.pattern}
        out.append({"resource": resource, "operations": list(g.operations), "host": "*"})
    return out


def acl_bindings(program: str, principal: str, s: CommonSettings, group: str | None = None) -> list:
    """confluent-kafka ``AclBinding``s for ``User:<principal>`` (the local stack's authorizer)."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

    kinds = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
             "transactionalId": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}
    patterns = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}
    ops = {"Read": AclOperation.READ, "Write": AclOperation.WRITE, "Describe": AclOperation.DESCRIBE,
           "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE}
    out = []
    for g in grants(program, s, group):
        name = "kafka-cluster" if g.resource == "cluster" else g.name
        for op in g.operations:
            out.append(AclBinding(kinds[g.resource], name, patterns[g.pattern], f"User:{principal}", "*",
                                  ops[op], AclPermissionType.ALLOW))
    return out
