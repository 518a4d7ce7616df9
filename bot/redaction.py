"""Keep Slack tokens and secrets out of every log line, whoever logs them (bolt, the SDK,
aiohttp, our own code)."""

from __future__ import annotations

import logging
import re

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
