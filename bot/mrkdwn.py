"""Text from people and from libvirt inside Slack's mrkdwn: it reads as typed, and never becomes a
mention, a link or formatting.

The one rule: decode on input, escape on output. Slack sends ``&``, ``<`` and ``>`` in a slash
command's text as ``&amp;``, ``&lt;`` and ``&gt;``; ``decode_slack`` turns them back, once, at
the Slack edge, so the catalogue holds what the person typed. Every place that puts such text
into a message wraps it in ``literal``. Messages are written once for every front end: the
console shows them through ``plain``, which undoes exactly what ``literal`` did.
"""

from __future__ import annotations

import re
import unicodedata

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_DECODE = {"amp": "&", "lt": "<", "gt": ">"}
_SLACK_ENTITY = re.compile(r"&(amp|lt|gt);")
_FORMATTING = frozenset("*_~`")
# Slack has no backslash escape. A date token with an invalid format shows its fallback text,
# and Slack renders that fallback as plain text, never as formatting (the technique jsx-slack's
# <Escape> uses). A person cannot type this token: their '<' arrives as '&lt;'.
_TOKEN = "<!date^00000000^{{_}}|{}>"
_TOKEN_PATTERN = re.compile(r"<!date\^00000000\^\{_\}\|([*_~`])>")
# Text that reorders what is shown (Trojan Source) or drives a terminal (escape sequences).
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SPACES = frozenset("\t\n\r")


def decode_slack(text: str) -> str:
    """A slash command's text as the person typed it (one pass: ``&amp;lt;`` is ``&lt;``)."""
    return _SLACK_ENTITY.sub(lambda m: _DECODE[m.group(1)], text)


def _formats(text: str, i: int) -> bool:
    """Slack formats ``*x*`` only where the marker touches a word edge: a marker between two
    letters or digits (``before_upgrade``) is plain already and is left as typed."""
    if text[i] == "`":
        return True
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return not (before.isalnum() and after.isalnum())


def literal(text: object) -> str:
    """``text`` for mrkdwn, shown exactly as it is: no mention, link, formatting or control."""
    raw = str(text)
    out: list[str] = []
    for i, char in enumerate(raw):
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _FORMATTING and _formats(raw, i):
            out.append(_TOKEN.format(char))
        elif char in _SPACES:
            out.append(" ")
        elif char in _BIDI or unicodedata.category(char) in ("Cc", "Cs"):
            out.append("\ufffd")
        else:
            out.append(char)
    return "".join(out)


def plain(text: str) -> str:
    """A message for a terminal: what ``literal`` escaped, back as typed."""
    text = _TOKEN_PATTERN.sub(r"\1", text)
    return _SLACK_ENTITY.sub(lambda m: _DECODE[m.group(1)], text)
