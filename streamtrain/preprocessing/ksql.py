"""ksqlDB rendering of a preprocessing spec: the same semantics as the embedded engine.

The raw stream is declared over the raw topic (JSON, key device_id). Kafka records are stamped
with their arrival (the stream topics append with LogAppendTime, so retention counts from arrival
however old a replayed reading is); the reading's event time is its ``ts`` field (epoch seconds).
The features stream therefore carries ``event_ms`` (``ts`` in milliseconds) and names it as its
``TIMESTAMP``: ROWTIME downstream, and so the windows, use event time like the engine does.
Statements are deterministic text, kept under golden tests.
"""

from __future__ import annotations

from streamtrain.preprocessing.spec import PreprocessSpec, parse_expression
from streamtrain.settings import CommonSettings

STREAM_RAW = "STREAMTRAIN_RAW"
STREAM_FEATURES = "STREAMTRAIN_FEATURES"
TABLE_WINDOWS = "STREAMTRAIN_WINDOWS"
#: Column of the features stream holding the event time in ms: its TIMESTAMP (ROWTIME of windows).
EVENT_TIME = "event_ms"


def sql_expr(text: str, where: str) -> str:
    return parse_expression(text, where).sql(dialect="")


def select_features(spec: PreprocessSpec, source: str = STREAM_RAW) -> str:
    """The SELECT of the features stream (also executed by the agreement test in a SQL engine)."""
    cols = ["device_id", "ts", "seq", *spec.features]
    # Derived expressions may use earlier derived names: inline them so plain SQL can evaluate them.
    inlined: dict[str, str] = {}
    for d in spec.derived:
        tree = parse_expression(d.expr, d.name)
        for col in list(tree.find_all(__import__("sqlglot").exp.Column)):
            if col.name in inlined:
                col.replace(parse_expression(f"({inlined[col.name]})", d.name))
        inlined[d.name] = tree.sql(dialect="")
        cols.append(f"({inlined[d.name]}) AS {d.name}")
    cols += ["device_type"] + ([spec.label] if spec.label else []) + (["anomaly"] if spec.label != "anomaly" else [])
    cols.append(f"CAST(FLOOR(ts * 1000) AS BIGINT) AS {EVENT_TIME}")
    where = f"\nWHERE {sql_expr(spec.filter, 'filter')}" if spec.filter else ""
    return f"SELECT {', '.join(cols)}\nFROM {source}{where}"


def select_windows(spec: PreprocessSpec, source: str = STREAM_FEATURES) -> str | None:
    if not spec.windows:
        return None
    aggs = []
    for a in spec.windows.aggregates:
        fn = "COUNT" if a.fn == "count" else a.fn.upper()
        aggs.append(f"{fn}({a.field}) AS {a.name}")
    return (
        f"SELECT device_id, WINDOWSTART AS window_start_ms, WINDOWEND AS window_end_ms, {', '.join(aggs)}\n"
        f"FROM {source}\nWINDOW TUMBLING (SIZE {spec.windows.size_seconds} SECONDS)\nGROUP BY device_id"
    )


def render(spec: PreprocessSpec, settings: CommonSettings) -> list[str]:
    label_cols = [f"{spec.label} INT"] if spec.label else []
    raw_cols = [
        "device_id VARCHAR KEY",
        "ts DOUBLE",
        "seq BIGINT",
        *(f"{f} DOUBLE" for f in spec.features),
        "device_type VARCHAR",
        *label_cols,
        "anomaly VARCHAR",
    ]
    statements = [
        f"CREATE STREAM IF NOT EXISTS {STREAM_RAW} (\n  " + ",\n  ".join(raw_cols) + "\n) WITH (KAFKA_TOPIC='"
        f"{settings.topic_raw}', KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON');",
        f"CREATE STREAM IF NOT EXISTS {STREAM_FEATURES} WITH (KAFKA_TOPIC='{settings.topic_features}', "
        f"KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON', TIMESTAMP='{EVENT_TIME}') AS\n{select_features(spec)}\nEMIT CHANGES;",
    ]
    windows = select_windows(spec)
    if windows:
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {TABLE_WINDOWS} WITH (KAFKA_TOPIC='{settings.topic_windows}', "
            f"KEY_FORMAT='KAFKA', VALUE_FORMAT='JSON') AS\n{windows}\nEMIT FINAL;"
        )
    if spec.sequences:
        # ksqlDB has no "last N rows of a key" per record; the embedded engine builds them.
        statements.append(
            f"-- sequences (last {spec.sequences.length} records per device) for "
            f"'{settings.topic_sequences}' are built by `streamtrain preprocess`, not by ksqlDB."
        )
    return statements
