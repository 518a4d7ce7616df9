"""Keep Slack tokens and secrets out of every log line, whoever logs them (bolt, the SDK,
aiohttp, our own code)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import TextIO

# Bot, user, app-level, refresh and legacy tokens, and webhook paths that act as credentials.
_TOKEN = re.compile(r"\b(xox[abeoprs]|xapp)-[A-Za-z0-9-]+")
_HOOK = re.compile(r"(hooks\.slack\.com/[A-Za-z/]+/)[A-Za-z0-9/]+")


def redact(text: str) -> str:
    return _HOOK.sub(r"\1[redacted]", _TOKEN.sub(r"\1-[redacted]", text))


class RedactingFilter(logging.Filter):
    """Rewrites each record's final message with its secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install(handler: logging.Handler) -> None:
    handler.addFilter(RedactingFilter())


# ``SNAPBOT_LOG_FORMAT``: plain lines for people, or one JSON object a line for log shippers.
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: time, level, logger, message, the structured
    fields a record carries under ``extra={"snapbot": {...}}`` (an operation's id, kind, VM,
    status...), and the traceback if any. The whole line is masked again: a field or a
    traceback may carry a token the message did not."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "snapbot", None)
        if isinstance(fields, dict):
            entry.update({key: value for key, value in fields.items() if key not in entry})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def log_handler(stream: TextIO, log_format: str = "text") -> logging.Handler:
    """A handler writing to ``stream`` in ``log_format`` (one of ``LOG_FORMATS``), with every
    secret masked."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {log_format!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    install(handler)
    return handler
