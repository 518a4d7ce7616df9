"""The first line a front end prints: where it is connected and how it listens."""

from __future__ import annotations

from core.config import SlackSettings


def fallback_banner(reason: str, uri: str) -> str:
    """First line when no libvirt daemon could be reached."""
    return (
        f"snapbot: {reason}; using libvirt's built-in test hypervisor {uri} instead "
        "(demo VMs only, nothing real is touched)."
    )


def connected_banner(uri: str) -> str:
    return f"snapbot: connected to {uri}. Type /snapshot help."


def slack_banner(uri: str, settings: SlackSettings) -> str:
    modes = []
    if settings.signing_secret is not None:
        modes.append(f"HTTP on port {settings.port}")
    if settings.app_token is not None:
        modes.append("Socket Mode")
    names = ", ".join(settings.commands.values())
    return f"snapbot: connected to {uri}; Slack via {' and '.join(modes)}; commands {names}."


def log_format_unknown(value: str) -> str:
    return (
        f"snapbot: SNAPBOT_LOG_FORMAT={value!r} is not a log format; set it to text (the "
        "default, lines for people) or json (one JSON object a line), or unset it."
    )
