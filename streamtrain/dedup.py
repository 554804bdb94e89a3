"""Tell repeated readings from readings that reuse an identity.

MQTT QoS 1 redelivers after a bridge crash (forwarded, not yet acknowledged) and devices resend
unacknowledged messages after a broker restart; both repeat a reading with the same device and
seq, and the same content, shortly after the original: a ``duplicate``, dropped. A *different*
reading under a (device, seq) already seen (a replay that numbered its seqs from 0 again, a device
whose counter was reset) is ``reused``: it must never be dropped silently, the caller dead-letters
it. Per device this keeps, for the seqs within ``window`` of the highest one, a fingerprint of the
reading; a seq older than that is ``too_old`` (it cannot be told apart from a repeat, so it is
dead-lettered too).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

#: Header of a features record carrying the fingerprint of the raw reading it came from, so the
#: seen readings (with their fingerprints) can be rebuilt from the features topic after a restart.
FINGERPRINT_HEADER = "streamtrain.reading"


def fingerprint(record: dict) -> str:
    """A short digest of the reading's whole content (key order does not matter)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Deduplicator:
    def __init__(self, window: int = 4096, max_devices: int = 200_000) -> None:
        self.window = window
        self.max_devices = max_devices
        # Per device, most recently used last: [highest seq, {seq: fingerprint}] (a list, updated in place).
        self._seen: OrderedDict[str, list] = OrderedDict()

    def check(self, device: str, seq: int, reading: str | None = None) -> str:
        """'new' (and remember it), 'duplicate' (the same reading again), 'reused' (another reading
        under a seen seq) or 'too_old'. ``reading`` is the fingerprint; None compares as the same."""
        entry = self._seen.get(device)
        if entry is not None:
            recent = entry[1]
            if seq in recent:
                known = recent[seq]
                return "duplicate" if known is None or reading is None or known == reading else "reused"
            if seq <= entry[0] - self.window:
                return "too_old"
        self.add(device, seq, reading)
        return "new"

    def add(self, device: str, seq: int, reading: str | None = None) -> None:
        seen = self._seen
        entry = seen.get(device)
        if entry is None:
            entry = seen[device] = [-1, {}]
            if len(seen) > self.max_devices:
                seen.popitem(last=False)
        else:
            seen.move_to_end(device)
        recent = entry[1]
        recent[seq] = reading
        if seq > entry[0]:
            entry[0] = high = seq
            if len(recent) > 2 * self.window:  # prune now and then, not on every record
                entry[1] = {s: r for s, r in recent.items() if s > high - self.window}

    def newest(self, device: str) -> int | None:
        """The highest seq seen of ``device``, None when it has none."""
        entry = self._seen.get(device)
        return entry[0] if entry is not None and entry[0] >= 0 else None

    def remove(self, device: str, seq: int) -> None:
        """Undo ``check``'s remembering (its transaction was aborted and the record will come again)."""
        entry = self._seen.get(device)
        if entry is not None:
            entry[1].pop(seq, None)

    def forget(self, devices) -> None:
        for d in devices:
            self._seen.pop(d, None)

    def __len__(self) -> int:
        return len(self._seen)
