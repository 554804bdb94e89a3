"""Broker reachability for a program's /readyz."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import KafkaError

from streamtrain import logs

log = logs.get("kafka")


class KafkaHealth:
    """Whether the brokers are reachable, for /readyz. A metadata request from the probe's own thread
    decides (at most once a second): error callbacks alone are not enough, they are served only when
    the main loop polls, and it may be blocked in a transaction call while the broker is away."""

    DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE)

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.up = True
        self.last_error = ""
        self.min_interval_s = min_interval_s
        self._checked = 0.0

    def error_cb(self, err: KafkaError) -> None:
        if err.code() in self.DOWN:
            self.up = False
            self.last_error = str(err)
        log.warning("kafka_error", error=str(err))

    def ok(self, probe: Callable[[], object]) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.min_interval_s:
            self._checked = now
            try:
                probe()
                self.up = True
            except Exception:  # noqa: BLE001 - unreachable
                self.up = False
        return self.up
