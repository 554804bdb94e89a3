"""docs/capacity.md from measurements: ``python -m bench.capacity [bench/results/load.json]``.

Reads what ``make bench-load`` measured (CPU and peak RSS of every program and broker at each
offered rate), derives the cost per 1,000 readings/s from the highest rate the pipeline sustained
with nothing lost, and sizes fleets of 10,000 / 100,000 / 1,000,000 devices at 1 Hz from it. The
generated part of docs/capacity.md sits between the two ``capacity:generated`` markers; the
prose around it (the limits that change the design) is written by hand.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "capacity.md"
BEGIN, END = "<!-- capacity:generated:begin -->", "<!-- capacity:generated:end -->"
FLEETS = (10_000, 100_000, 1_000_000)
#: Headroom kept on every node: size for this fraction of a core / of memory in use.
UTILISATION = 0.6
#: Partitions per program replica at most one consumer each; Kafka guidance per broker.
PARTITIONS_PER_BROKER = 4_000
#: One HiveMQ CE node's connections we plan for (file descriptors, memory per session).
CONNECTIONS_PER_HIVEMQ = 100_000


def sustained(rates: list[dict]) -> dict:
    """The highest offered rate that came out fully scored (>= 95 % of offered, nothing lost)."""
    ok = [
        r for r in rates if r["lost"] == 0 and r["duplicate_scores"] == 0 and r["scores_per_s"] >= 0.95 * r["offered"]
    ]
    if not ok:
        raise SystemExit("no measured rate was sustained without loss: nothing to size from")
    return max(ok, key=lambda r: r["offered"])


def per_thousand(r: dict) -> dict[str, dict[str, float]]:
    k = r["offered"] / 1000
    return {name: {"cores": u["cores"] / k, "rss_mb": u["rss_mb"]} for name, u in r["programs"].items()}


def baseline_bytes_per_device(features: int = 4, devices: int = 1000) -> float:
    """JSON bytes a device's own baseline adds to a model version (streamtrain.baselines), measured."""
    import numpy as np

    from streamtrain.baselines import DeviceBaselines

    rng = np.random.default_rng(0)
    b = DeviceBaselines(
        50,
        {f"dev-{i:05d}": i for i in range(devices)},
        rng.normal(60, 10, (devices, features)),
        rng.uniform(0.1, 2, (devices, features)),
        rng.uniform(0.5, 3, devices),
        rng.integers(50, 5000, devices),
        {},
    )
    return len(json.dumps(b.as_metadata())) / devices


def models_record_limit() -> int:
    """The models topic's max.message.bytes, as the pipeline creates it."""
    from streamtrain.settings import CommonSettings
    from streamtrain.topics import pipeline_topics

    s = CommonSettings()
    return int(next(t for t in pipeline_topics(s) if t.name == s.topic_models).config["max.message.bytes"])


def table(data: dict) -> str:
    rates = data["rates"]
    base = sustained(rates)
    cost = per_thousand(base)
    lines = [
        f"Measured {data['at']} on `{data['machine']['node']}` ({data['machine']['cores']} cores), "
        f"ingestion: {data.get('ingest', 'bridge')}.",
        "",
        "| offered/s | scored/s | lost | dup | device→score p50 / p99 ms | "
        + " | ".join(f"{n} CPU (cores)" for n in base["programs"])
        + " |",
        "|---|---|---|---|---|" + "---|" * len(base["programs"]),
    ]
    for r in rates:
        lines.append(
            f"| {r['offered']:,} | {r['scores_per_s']:,.0f} | {r['lost']} | {r['duplicate_scores']} | "
            f"{r['latency_p50_ms']} / {r['latency_p99_ms']} | "
            + " | ".join(f"{r['programs'].get(n, {}).get('cores', 0):.2f}" for n in base["programs"])
            + " |"
        )
    lines += [
        "",
        f"Cost per 1,000 readings/s, from the highest rate sustained with nothing lost ({base['offered']:,}/s):",
        "",
        "| program | CPU cores per 1k/s | peak RSS (MB) |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {c['cores']:.3f} | {c['rss_mb']:.0f} |" for n, c in cost.items()]
    lines += [
        "",
        f"Sizing at 1 Hz per device, nodes run at {UTILISATION:.0%} CPU; replicas = "
        "ceil(cores needed / (cores per replica at the measured rate)):",
        "",
        "| devices | readings/s | "
        + " | ".join(f"{n} cores" for n in cost)
        + f" | partitions | HiveMQ nodes ({CONNECTIONS_PER_HIVEMQ:,} connections each, planned) |",
        "|---|---|" + "---|" * len(cost) + "---|---|",
    ]
    for devices in FLEETS:
        k = devices / 1000
        cores = {n: c["cores"] * k / UTILISATION for n, c in cost.items()}
        # Partitions: one per scorer/preprocessor replica at least, rounded up to a multiple of 6.
        replicas = max(
            math.ceil(cores.get(n, 0) / max(base["programs"].get(n, {}).get("cores", 1e-9), 1e-9))
            for n in ("scorer", "preprocess", "bridge")
            if n in cost
        )
        partitions = max(6, 6 * math.ceil(replicas / 6))
        lines.append(
            f"| {devices:,} | {devices:,} | "
            + " | ".join(f"{v:.1f}" for v in cores.values())
            + f" | {partitions} | {math.ceil(devices / CONNECTIONS_PER_HIVEMQ)} |"
        )
    per_device = baseline_bytes_per_device()
    limit = models_record_limit()
    lines += [
        "",
        f"A model version with per-device baselines grows by {per_device:.0f} bytes per device (measured on "
        f"the codec's JSON), so the models topic's record limit ({limit / 2**20:.0f} MiB) holds the "
        f"baselines of at most ~{limit / per_device:,.0f} devices; "
        + ", ".join(f"{d:,} devices need {d * per_device / 2**20:.1f} MiB" for d in FLEETS)
        + ".",
    ]
    return "\n".join(lines)


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "bench" / "results" / "load.json"
    data = json.loads(source.read_text())
    generated = f"{BEGIN}\n{table(data)}\n{END}"
    text = DOC.read_text()
    if BEGIN not in text:
        raise SystemExit(f"{DOC}: no {BEGIN} marker")
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + generated + rest.split(END, 1)[1])
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
