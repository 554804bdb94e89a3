"""Prometheus metrics and health endpoints on one small HTTP server per program."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class MetricsServer:
    """Serves /metrics (Prometheus text), /healthz (alive) and /readyz (ready() is True)."""

    def __init__(self, registry: CollectorRegistry, port: int, ready: Callable[[], bool] = lambda: True,
                 host: str = "0.0.0.0") -> None:
        self.registry = registry
        self.ready = ready
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
