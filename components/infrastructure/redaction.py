"""Credentials never leave the process: one `redact` used wherever text leaves it (log lines, JSON results, queued
tracking files, error messages).

What is masked (replaced by `***`):
- the password of a URI's user info: `http://user:PASSWORD@host` -> `http://user:***@host` (MLflow, PostgreSQL
  and HTTP proxies all take credentials this way, and MLflow puts the URI into its own error messages);
- values of query parameters that carry secrets: `?token=...`, `&X-Amz-Signature=...`, `password=`, `api_key=` ...;
- the value of any secret environment variable (`SECRET_VARIABLES`) wherever it appears, e.g. an AWS secret key
  quoted back by a library's error message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

MASK = "***"
SECRET_VARIABLES = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "DATABRICKS_TOKEN",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "PGPASSWORD",
    "KFP_TOKEN",
)
_MIN_SECRET_CHARS = 6  # shorter values ("", "x", "1") would mask ordinary text and protect nothing

# scheme://user:password@ ; the password is anything up to the last '@' before the host (it may hold ':' or '@'
# only percent-encoded, which is what RFC 3986 requires).
# `:/` also matches a URI that went through pathlib (Path("https://u:p@h") prints as "https:/u:p@h").
_USERINFO = re.compile(r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2}[^\s/@:'\"]*:)(?P<secret>[^\s/@'\"]+)@")
_QUERY_SECRET = re.compile(
    r"(?P<prefix>[?&;](?:[A-Za-z0-9_.-]*?)(?:token|password|passwd|pwd|secret|signature|credential|api[_-]?key|"
    r"access[_-]?key|sig|auth)[A-Za-z0-9_.-]*=)(?P<secret>[^&#\s'\"]+)",
    re.IGNORECASE,
)


def _secret_values() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_VARIABLES}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: Any) -> str:
    """`text` (any object, via str) with every credential masked; see the module docstring."""
    text = str(text)
    if ":/" in text:
        text = _USERINFO.sub(lambda m: f"{m['prefix']}{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(lambda m: f"{m['prefix']}{MASK}", text)
    for value in _secret_values():
        if value in text:
            text = text.replace(value, MASK)
    return text


MAX_ERROR_CHARS = 2000


def one_line(message: object, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message (or exception) as one redacted line of bounded length: what every error printer shows."""
    text = redact(" ".join(str(message).split())) or type(message).__name__
    return text if len(text) <= limit else text[: limit - 30] + f" ... ({len(text)} characters)"


def print_error(message: object) -> None:
    """`error: <one line>` on stderr: how the command line and a pipeline task report an error the user can fix."""
    print(f"error: {one_line(message)}", file=sys.stderr, flush=True)


def redact_data(data: Any) -> Any:
    """A copy of JSON-like `data` (dicts, lists, tuples, strings, numbers) with every string redacted."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(key): redact_data(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return type(data)(redact_data(item) for item in data)
    return data


def is_redacted(text: str) -> bool:
    """True when `text` had a credential masked (it can no longer be used to connect)."""
    return MASK in text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a malformed record is the library's own problem; leave it as it is
        return
    record.msg, record.args = redact(message), None
    if record.exc_info:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)


def install_logging_redaction() -> None:
    """Redact every stdlib log record as it is made, for the libraries (MLflow, urllib3, botocore, kfp) that log
    through `logging` with handlers of their own: a record factory sees them all, a handler filter would not."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    factory.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
