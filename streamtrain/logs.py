"""Structured logging: one line per event, JSON unless a person reads it at a terminal."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def resolve_format(fmt: str) -> str:
    """``auto``: console lines for a person at a terminal, JSON for a pipe, a file or a Pod's log."""
    if fmt != "auto":
        return fmt
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
    return "console" if sys.stderr.isatty() and not in_pod else "json"


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Configure structlog and stdlib logging to emit one structured line per event on stderr."""
    fmt = resolve_format(fmt)
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format="%(message)s", force=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(component=name)
