"""Slack settings are checked at start-up with messages that say how to fix them, and no secret
reaches a log line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.redaction import RedactingFilter, redact
from core.config import Settings
from core.domain.access import Action
from core.errors import InvalidInput

BASE = {"HOME": "/home/op"}


def test_without_slack_settings_the_console_runs() -> None:
    assert Settings.load(BASE).slack is None


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"SLACK_APP_TOKEN": "xapp-1"}, "SLACK_BOT_TOKEN is missing"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "set SLACK_APP_TOKEN"),
        ({"SLACK_BOT_TOKEN": "xoxp-1", "SLACK_APP_TOKEN": "xapp-1"}, "starting with xoxb-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"}, "starting with xapp-"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": "http"}, "PORT"),
        (
            {
                "SLACK_BOT_TOKEN": "xoxb-1",
                "SLACK_SIGNING_SECRET": "s",
                "SNAPBOT_PRUNE_COMMAND": "x",
            },
            "must start with /",
        ),
        ({"SNAPBOT_TIMEZONE": "Mars/Olympus"}, "is not a time zone"),
    ],
)
def test_bad_slack_settings_are_refused_with_the_fix(env: dict[str, str], problem: str) -> None:
    with pytest.raises(InvalidInput) as info:
        Settings.load(BASE | env)
    assert problem in str(info.value)


def test_slack_settings_from_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "snapbot.toml"
    config.write_text(
        '[slack.commands]\nrestore = "/vm-restore"\n'
        '[[access.grants]]\nrole = "operator"\nusergroups = ["S_OPS"]\nvms = ["web-*"]\n',
        encoding="utf-8",
    )
    settings = Settings.load(
        BASE
        | {
            "SNAPBOT_CONFIG": str(config),
            "SLACK_BOT_TOKEN": "xoxb-secret-1",
            "SLACK_SIGNING_SECRET": "shh",
            "SNAPBOT_ADMINS": "U1,U2",
            "SNAPBOT_SNAPSHOT_COMMAND": "/vm-snapshot",
        }
    )
    slack = settings.slack
    assert slack is not None
    assert slack.commands == {
        "snapshot": "/vm-snapshot",
        "restore": "/vm-restore",
        "prune": "/prune",
    }
    assert slack.port == 3000
    assert "xoxb-secret-1" not in repr(settings)
    assert "shh" not in repr(settings)
    assert settings.access.allows("U2", (), Action.PRUNE, vm=None, channel=None)
    assert settings.access.allows("U9", ("S_OPS",), Action.SNAPSHOT, vm="web-01", channel=None)
    assert not settings.access.allows("U9", ("S_OPS",), Action.RESTORE, vm="web-01", channel=None)


def test_tokens_are_masked_in_log_lines_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert redact("token xoxb-123-456-abcDEF and xapp-1-A0-99") == (
        "token xoxb-[redacted] and xapp-[redacted]"
    )
    logger = logging.getLogger("test.redaction")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO, logger="test.redaction"):
            logger.info("calling with %s", "xoxb-999-secret")
            try:
                raise RuntimeError("auth failed for xoxb-777-secret")
            except RuntimeError:
                logger.exception("boom")
    finally:
        logger.filters.clear()
    text = caplog.text
    assert "xoxb-999-secret" not in text
    assert "xoxb-777-secret" not in text
    assert "xoxb-[redacted]" in text
