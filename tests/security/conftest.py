"""The Slack fixtures of tests/slack (the real bolt app over HTTP against the fake Slack)."""

from __future__ import annotations

from tests.slack.conftest import bot, slack

__all__ = ["bot", "slack"]
