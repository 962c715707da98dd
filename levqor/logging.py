"""Structured JSON logs (structlog) that never carry a secret.

Redaction is by key name, applied recursively, as the last processor before rendering, so a
careless `log.info("login", password=...)` anywhere still prints `[redacted]`.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO, cast

import structlog

SECRET_KEY = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|^key$|private",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            key: REDACTED if SECRET_KEY.search(str(key)) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    redacted: MutableMapping[str, Any] = redact(event_dict)
    return redacted


class StderrNow:
    """`sys.stderr` as it is at each write: a test runner (or Click's) swaps it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_cli_logging() -> None:
    """Operator commands: warnings and errors to stderr, readable, so that stdout carries
    only what the command prints (its table, its `--json`). Long-running commands (`up`,
    `serve`, `worker`, `scheduler`) configure their own from the settings."""
    configure_logging("WARNING", json=False, stream=cast(TextIO, StderrNow()))


def configure_logging(
    level: str = "INFO", *, json: bool = True, stream: TextIO | None = None
) -> None:
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=stream is None,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
