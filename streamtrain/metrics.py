"""Prometheus metrics and health endpoints on one small HTTP server per program."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

READY = "streamtrain_ready"


def zero_labels(counter, values) -> None:
    """Export ``counter{label=v}`` at 0 for every known value: a series born at 1 shows no increase to
    rate() or increase(), so the first burst of a new dead-letter reason would be invisible."""
    for value in values:
        counter.labels(value)


class ReadyCollector(Collector):
    """``streamtrain_ready``: what /readyz answers, asked at each scrape, so alerts see a program that
    runs but cannot work (no broker, no model) and not only one that is gone."""

    def __init__(self, ready: Callable[[], bool]) -> None:
        self.ready = ready

    def describe(self):
        return [GaugeMetricFamily(READY, "1 when the program is ready (/readyz answers 200), else 0")]

    def collect(self):
        yield GaugeMetricFamily(
            READY, "1 when the program is ready (/readyz answers 200), else 0", value=1.0 if self.ready() else 0.0
        )


class BatchHistogram(Collector):
    """A Prometheus histogram fed a whole batch of observations at once (numpy), for hot loops where
    prometheus_client's per-value ``observe()`` (a lock and a bucket search each) would cost more
    than the work measured. Exposed exactly like a ``Histogram``: ``_bucket{le}``, ``_count``, ``_sum``."""

    def __init__(self, name: str, documentation: str, buckets, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.upper = np.array([*sorted(float(b) for b in buckets), np.inf])
        self.counts = np.zeros(len(self.upper), np.int64)
        self.sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        # Bucket i holds values <= upper[i] (Prometheus' `le`); cumulated when collected.
        per_bucket = np.bincount(np.searchsorted(self.upper, values, side="left"), minlength=len(self.upper))
        with self._lock:
            self.counts += per_bucket
            self.sum += float(values.sum())

    def describe(self):
        return [HistogramMetricFamily(self.name, self.documentation)]

    def collect(self):
        with self._lock:
            cumulative, total = np.cumsum(self.counts).tolist(), self.sum
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            sum_value=total,
            buckets=[(floatToGoString(le), c) for le, c in zip(self.upper, cumulative)],
        )


class MetricsServer:
    """Serves /metrics (Prometheus text, with ``streamtrain_ready``), /healthz (alive) and /readyz (ready() is True)."""

    def __init__(
        self, registry: CollectorRegistry, port: int, ready: Callable[[], bool] = lambda: True, host: str = "0.0.0.0"
    ) -> None:
        self.registry = registry
        self.ready = ready
        registry.register(ReadyCollector(ready))
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                if self.path.startswith("/metrics"):
                    body, status, ctype = generate_latest(outer.registry), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    body, status, ctype = b"ok\n", 200, "text/plain"
                elif self.path.startswith("/readyz"):
                    ok = outer.ready()
                    body, status, ctype = (b"ready\n", 200, "text/plain") if ok else (b"not ready\n", 503, "text/plain")
                else:
                    body, status, ctype = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep access logs out of the structured log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
