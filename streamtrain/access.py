"""Who may do what on Kafka: the topics, consumer groups and transactional ids each program uses.

One table, two renderings: Strimzi ``KafkaUser`` ACLs on Kubernetes (``operator/``) and
``AdminClient.create_acls`` bindings on the local stack (``streamtrain stack kafka-user``), so
the least privilege a program runs with is the same everywhere and is tested against a real
broker. A program's consumer group doubles as the prefix of its transactional ids
(``<group>.<instance>``) and of its helper groups (``<group>-restore``).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType

from streamtrain.kafka import READER_GROUP
from streamtrain.modelcodec import publisher_transactional_id
from streamtrain.settings import CommonSettings

#: Programs that talk to Kafka and the group each uses by default (the simulator speaks MQTT only).
DEFAULT_GROUPS = {
    "bridge": None,
    "preprocess": "streamtrain-preprocess",
    "train": None,
    "score": "streamtrain-scorer",
    "score-streams": "streamtrain-scorer",
    "evaluate": None,
    "ksqldb": "default_",  # for ksqlDB the "group" is its ksql.service.id (default `default_`)
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
    return [
        Grant("group", group, "prefix", ("Read", "Describe")),
        Grant("transactionalId", group, "prefix", ("Write", "Describe")),
    ]


def ksqldb_grants(s: CommonSettings, service_id: str, windows: bool = True) -> list[Grant]:
    """ksqlDB running the rendered preprocessing queries headless (``ksql.queries.file``).

    As ksqlDB's security guide lists for headless servers on Kafka >= 2.0: DescribeConfigs on the
    cluster, All on its internal topics and groups (prefix ``_confluent-ksql-<service id>``: changelog,
    repartition topics, one consumer group per query) and on its processing log topic
    (``<service id>ksql_processing_log``), Read on the inputs and Write on the outputs (which exist:
    KafkaTopics, so no Create). Transactional ids share the internal prefix (exactly-once queries).
    Never the sequences topic: ksqlDB does not build sequences."""
    internal = f"_confluent-ksql-{service_id}"
    out = [Grant("cluster", operations=("DescribeConfigs",)), *_read(s.topic_raw), *_write(s.topic_features)]
    if windows:  # the windows table is computed from the features stream
        out += [*_read(s.topic_features), *_write(s.topic_windows)]
    return [
        *out,
        Grant("topic", internal, "prefix", ("All",)),
        Grant("group", internal, "prefix", ("All",)),
        Grant("transactionalId", internal, "prefix", ("Write", "Describe")),
        Grant("topic", f"{service_id}ksql_processing_log", operations=("All",)),
    ]


def grants(program: str, s: CommonSettings, group: str | None = None, windows: bool = True) -> list[Grant]:
    """Everything ``program`` needs and nothing more, one grant per resource; ``group`` overrides its
    default consumer group (for ksqldb: its service id; ``windows``: whether its queries build the
    windows table)."""
    merged: dict[tuple, list[str]] = {}
    for g in _needs(program, s, group, windows):
        ops = merged.setdefault((g.resource, g.name, g.pattern), [])
        ops += [op for op in g.operations if op not in ops]
    return [Grant(r, n, p, tuple(ops)) for (r, n, p), ops in merged.items()]


def _needs(program: str, s: CommonSettings, group: str | None, windows: bool) -> list[Grant]:
    if program not in DEFAULT_GROUPS:
        raise ValueError(f"unknown program {program!r}; one of {', '.join(PROGRAMS)}")
    group = group or DEFAULT_GROUPS[program]
    if program == "ksqldb":
        return ksqldb_grants(s, group, windows)
    # Idempotent producers need no cluster-wide IdempotentWrite: Write on a topic suffices (KIP-679).
    produce: list[Grant] = []
    if program == "bridge":
        return [*_write(s.topic_raw, s.topic_deadletter), *produce]
    if program == "preprocess":
        # Reads back its own committed features to rebuild the readings it has seen (dedup).
        return [
            *_read(s.topic_raw, s.topic_features),
            *_write(s.topic_features, s.topic_windows, s.topic_sequences, s.topic_deadletter),
            *_group(group),
            *produce,
        ]
    if program == "train":
        # Reads the models topic for the parent version; produces model versions in transactions under one id
        # per models topic, so two trainers of a pipeline fence each other instead of sharing a number.
        return [
            *_read(s.topic_features, s.topic_windows, s.topic_sequences, s.topic_models),
            *_write(s.topic_models),
            Grant("transactionalId", publisher_transactional_id(s.topic_models), operations=("Write", "Describe")),
            *_READER,
            *produce,
        ]
    if program in ("score", "score-streams"):
        return [
            *_read(s.topic_features, s.topic_sequences, s.topic_models),
            *_write(s.topic_scores, s.topic_deadletter),
            *_group(group),
            *_READER,
            *produce,
        ]
    # evaluate: reads scores and the model versions they name, writes nothing.
    return [*_read(s.topic_scores, s.topic_models), *_READER]


def strimzi_acls(program: str, s: CommonSettings, group: str | None = None, windows: bool = True) -> list[dict]:
    """The ``spec.authorization.acls`` of a Strimzi ``KafkaUser`` for ``program``."""
    out = []
    for g in grants(program, s, group, windows):
        resource = (
            {"type": g.resource}
            if g.resource == "cluster"
            else {"type": g.resource, "name": g.name, "patternType": g.pattern}
        )
        out.append({"resource": resource, "operations": list(g.operations), "host": "*"})
    return out


def acl_bindings(
    program: str, principal: str, s: CommonSettings, group: str | None = None, windows: bool = True
) -> list:
    """confluent-kafka ``AclBinding``s for ``User:<principal>`` (the local stack's authorizer)."""
    kinds = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactionalId": ResourceType.TRANSACTIONAL_ID,
        "cluster": ResourceType.BROKER,
    }
    patterns = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}
    ops = {
        "Read": AclOperation.READ,
        "Write": AclOperation.WRITE,
        "Describe": AclOperation.DESCRIBE,
        "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
        "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
        "All": AclOperation.ALL,
    }
    out = []
    for g in grants(program, s, group, windows):
        name = "kafka-cluster" if g.resource == "cluster" else g.name
        for op in g.operations:
            out.append(
                AclBinding(
                    kinds[g.resource],
                    name,
                    patterns[g.pattern],
                    f"User:{principal}",
                    "*",
                    ops[op],
                    AclPermissionType.ALLOW,
                )
            )
    return out
