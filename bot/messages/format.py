"""Sizes, durations, moments and people as every message shows them."""

from __future__ import annotations

from datetime import datetime


def human_bytes(size: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'unknown'."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_seconds(seconds: float) -> str:
    """0.13 -> '0.1 s'; 75 -> '1 min 15 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs} s"


def when(moment: datetime) -> str:
    """A timestamp as operators read it: UTC, to the second."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def mention(user: str) -> str:
    """A Slack user id as Slack shows it: the person's name, and a notification to them."""
    return f"<@{user}>"
