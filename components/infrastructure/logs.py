"""Structured logging: one call configures structlog for console (people) or JSON lines (machines).

Every step logs events with key=value fields (`log.info("shard_written", split="train", bytes=n)`), so a
pipeline run's logs can be grepped and parsed alike. Logs go to stderr; stdout is kept for results."""

from __future__ import annotations

import logging
import os
import sys

import structlog

from components.infrastructure.redaction import install_logging_redaction, redact
from components.infrastructure.settings import get_settings


def _redact_line(logger: object, method: str, line: str) -> str:
    """The rendered line with credentials masked: after the renderer, so exceptions and nested values are covered."""
    return redact(line)


def configure_logging(fmt: str | None = None, level: int = logging.INFO) -> None:
    fmt = fmt or get_settings().log_format
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
            _redact_line,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # Look sys.stderr up at each call: a fixed handle goes stale when the stream is replaced (tests, daemons).
        logger_factory=lambda *args: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    install_logging_redaction()
    # MLflow writes "View run ... at: <tracking URI>" straight to stdout, past any logging redaction, so a
    # password in MLFLOW_TRACKING_URI would be printed; our own `mlflow_run` log line says the same, redacted.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    if not structlog.is_configured():  # steps run without the CLI (kfp tasks, library use) redact all the same
        configure_logging()
    return structlog.get_logger(name)
