"""Records per CPU-second of the preprocessor's batch step, no broker (issue 28 item 1).

Raw messages as the bridge writes them (the simulator's fleet readings, compact JSON, keyed by
device, LogAppendTime) go through ``Preprocessor.process_batch`` in batches of ``batch_size``, with
exactly-once de-duplication on, the default spec, and the Kafka producer replaced by a counting sink
(here only: the tests that claim behaviour capture what is sent). Both the record-by-record path
(the reference) and the batch path run on the same input in the same process, so the ratio is
measured, not remembered.

    python -m bench.preprocess_cpu [--records 50000] [--devices 500] [--profile out.txt]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

from streamtrain import logs
from streamtrain.preprocessing.spec import PreprocessSpec
from streamtrain.preprocessor.app import Preprocessor, PreprocessSettings
from streamtrain.simulator.fleet import Fleet, FleetConfig


class RawMessage:
    """A consumed raw record as confluent-kafka's Message answers what process_batch reads of it. Its
    methods are C calls, as the real Message's are (a Python method per call would charge both steps
    for the stand-in, not for their work)."""

    __slots__ = ("value", "key", "topic", "partition", "offset", "timestamp", "headers", "error")

    def __init__(self, value: bytes, key: bytes, offset: int, arrived_ms: int) -> None:
        for name, answer in (
            ("value", value),
            ("key", key),
            ("topic", "streamtrain.telemetry.raw"),
            ("partition", 0),
            ("offset", offset),
            ("timestamp", (2, arrived_ms)),  # LogAppendTime
            ("headers", []),
            ("error", None),
        ):
            setattr(self, name, itertools.repeat(answer).__next__)


def raw_messages(n: int, devices: int, seed: int = 42) -> list[RawMessage]:
    """``n`` readings of a simulated fleet, one step of every device after another, 1 s apart."""
    fleet = Fleet(FleetConfig(devices=devices, seed=seed))
    start = time.time() - n // devices - 60
    out: list[RawMessage] = []
    step = 0
    while len(out) < n:
        ts = [start + step] * devices
        for device, reading in fleet.messages(ts):  # type: ignore[arg-type]
            body = json.dumps(reading, separators=(",", ":")).encode()
            out.append(RawMessage(body, device.encode(), len(out), int((start + step + 0.05) * 1000)))
        step += 1
    return out[:n]


class CountingSink:
    """Stands in for the producer: counts records and bytes per topic."""

    def __init__(self) -> None:
        self.records: dict[str, int] = {}
        self.bytes = 0

    def send(self, topic: str, value: bytes, **_kw) -> None:
        self.records[topic] = self.records.get(topic, 0) + 1
        self.bytes += len(value)


def make() -> tuple[Preprocessor, CountingSink]:
    s = PreprocessSettings(kafka_bootstrap="127.0.0.1:1", topic_raw="streamtrain.telemetry.raw")
    pp = Preprocessor(s, PreprocessSpec.default())
    sink = CountingSink()
    pp._send = sink.send  # type: ignore[method-assign]
    return pp, sink


def run(msgs: list[RawMessage], batch_size: int, batchwise: bool) -> dict:
    pp, sink = make()
    step = pp.process_batch if batchwise else pp.process_records
    try:
        t0 = time.process_time()
        for i in range(0, len(msgs), batch_size):
            step(msgs[i : i + batch_size])
        cpu = time.process_time() - t0
    finally:
        pp.lag.close()
        pp.consumer.close()
    return {"cpu_s": cpu, "records_per_cpu_s": len(msgs) / cpu, "sent": dict(sink.records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--devices", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--only", choices=["record", "batch"], default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each path (the median is reported)")
    ap.add_argument("--profile", default=None, help="write a pyinstrument text profile of the chosen path here")
    a = ap.parse_args()
    logs.configure("ERROR", "console")  # the sink's producer has no broker: its connection warnings are noise
    msgs = raw_messages(a.records, a.devices)
    paths = [a.only] if a.only else ["record", "batch"]
    if a.profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        r = run(msgs, a.batch_size, paths[0] == "batch")
        profiler.stop()
        with open(a.profile, "w") as f:
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
        print(json.dumps({paths[0]: r}))
        return
    # The machine is shared: the paths take turns, each run's figure kept, the median reported.
    runs: dict[str, list[dict]] = {p: [] for p in paths}
    for _ in range(a.repeat):
        for p in paths:
            runs[p].append(run(msgs, a.batch_size, p == "batch"))
    results: dict = {}
    for p, rs in runs.items():
        rs.sort(key=lambda r: r["records_per_cpu_s"])
        results[p] = {**rs[len(rs) // 2], "runs": [round(r["records_per_cpu_s"]) for r in rs]}
    if len(results) == 2:
        results["speedup"] = results["batch"]["records_per_cpu_s"] / results["record"]["records_per_cpu_s"]
        print(
            f"preprocess, {a.records} readings of {a.devices} devices, batches of {a.batch_size}: record step "
            f"{results['record']['records_per_cpu_s']:,.0f}, batch step {results['batch']['records_per_cpu_s']:,.0f} "
            f"records per CPU-second: {results['speedup']:.2f}x (target 4x)",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
