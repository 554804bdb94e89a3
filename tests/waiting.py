"""Waiting on a condition with a deadline (tests never sleep a fixed time)."""

from __future__ import annotations

import time
from typing import Any, Callable


def eventually(
    check: Callable[[], Any],
    what: str,
    timeout: float = 120.0,
    every: float = 0.5,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns a truthy value and return that value; fail naming ``what`` and
    the last value seen when ``timeout`` seconds pass first, followed by what ``explain`` returns
    then (the state that tells why)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    detail = ""
    if explain:
        try:
            detail = f"\n{explain()}"
        except Exception as exc:  # noqa: BLE001 - the timeout is the failure to report, not this
            detail = f"\n(explaining failed too: {exc!r})"
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}{detail}")
