"""Dead letters: every rejected record carries why it was rejected and where it came from, in headers."""

from __future__ import annotations


def dead_letter_headers(reason: str, source: str, detail: str = "") -> list[tuple[str, bytes]]:
    """Headers carried by every dead letter: why it was rejected and where it came from."""
    headers = [("streamtrain.reason", reason.encode()), ("streamtrain.source", source.encode())]
    if detail:
        headers.append(("streamtrain.detail", detail[:1000].encode("utf-8", "replace")))
    return headers


def headers_dict(msg) -> dict[str, str]:
    """A record's headers as text (a dead letter's reason, source and detail)."""
    return {k: (v.decode("utf-8", "replace") if v is not None else "") for k, v in (msg.headers() or [])}
