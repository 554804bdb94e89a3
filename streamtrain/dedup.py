"""Drop repeated (device_id, seq) readings: what at-least-once ingestion may deliver twice.

MQTT QoS 1 redelivers after a bridge crash (forwarded, not yet acknowledged) and devices resend
unacknowledged messages after a broker restart; both repeat a reading with the same device and
seq shortly after the original. Per device this keeps the seqs seen within ``window`` of the
highest one; a seq older than that is reported as ``too_old`` (it cannot be told apart from a
repeat, so it is dead-lettered, never silently dropped).
"""
from __future__ import annotations

from collections import OrderedDict


class Deduplicator:
    def __init__(self, window: int = 4096, max_devices: int = 200_000) -> None:
        self.window = window
        self.max_devices = max_devices
        self._seen: OrderedDict[str, tuple[int, set[int]]] = OrderedDict()

    def check(self, device: str, seq: int) -> str:
        """'new' (and remember it), 'duplicate' or 'too_old'."""
        high, recent = self._seen.get(device, (-1, set()))
        if seq in recent:
            return "duplicate"
        if seq <= high - self.window:
            return "too_old"
        self.add(device, seq)
        return "new"

    def add(self, device: str, seq: int) -> None:
        high, recent = self._seen.pop(device, (-1, set()))
        recent.add(seq)
        if seq > high:
            high = seq
            if len(recent) > 2 * self.window:  # prune now and then, not on every record
                recent = {s for s in recent if s > high - self.window}
        self._seen[device] = (high, recent)  # most recently used last
        if len(self._seen) > self.max_devices:
            self._seen.popitem(last=False)

    def remove(self, device: str, seq: int) -> None:
        """Undo ``check``'s remembering (its transaction was aborted and the record will come again)."""
        entry = self._seen.get(device)
        if entry is not None:
            entry[1].discard(seq)

    def forget(self, devices) -> None:
        for d in devices:
            self._seen.pop(d, None)

    def __len__(self) -> int:
        return len(self._seen)
