"""Log hygiene of the server: credentials sent in a query string (presigned-style URLs) never reach a log line.

uvicorn's access log writes each request's path with its query string; a client that puts
``X-Amz-Credential``, ``X-Amz-Signature`` or ``X-Amz-Security-Token`` there would leave them in every log.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_QUERY_CREDENTIAL = re.compile(r"(?i)((?:X-Amz-(?:Security-Token|Signature|Credential))=)[^&\s\"']*")
REDACTED = "REDACTED"


def redact(text: str) -> str:
    """``text`` with the values of query-string credentials replaced by ``REDACTED``."""
    return _QUERY_CREDENTIAL.sub(rf"\g<1>{REDACTED}", text)


class RedactQueryCredentials(logging.Filter):
    """Redact query-string credentials in a record's message and arguments (keeping their shape for formatters)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redacted(value) for key, value in record.args.items()}
        return True


def redact_server_logs() -> None:
    """Install the filter on uvicorn's loggers and on every handler uvicorn and the root logger write through.

    A handler's filter sees every record it writes, propagated ones included; the loggers' own filters cover
    handlers added later (e.g. by a test harness).
    """
    redaction = RedactQueryCredentials()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for owner in [*loggers, *(handler for logger in [*loggers, logging.getLogger()] for handler in logger.handlers)]:
        if not any(isinstance(existing, RedactQueryCredentials) for existing in owner.filters):
            owner.addFilter(redaction)


def _redacted(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value
