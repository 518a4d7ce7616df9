"""manifest.yml matches the app: the commands it registers, and Slack's manifest limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.grammar import COMMANDS
from core.config import DEFAULT_COMMANDS

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"


def load() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_manifest_commands_are_the_ones_the_app_handles() -> None:
    commands = {c["command"] for c in load()["features"]["slash_commands"]}
    assert commands == set(DEFAULT_COMMANDS.values())
    assert {name.lstrip("/") for name in commands} == set(COMMANDS)


def test_manifest_respects_slacks_limits() -> None:
    data = load()
    info = data["display_information"]
    assert len(info["name"]) <= 35
    assert len(info["description"]) <= 140
    for command in data["features"]["slash_commands"]:
        assert command["command"].startswith("/")
        assert len(command["command"]) <= 32
        assert command["description"]
        assert len(command["usage_hint"]) <= 1000
        assert "url" not in command, "Socket Mode manifests carry no URLs"
    scopes = data["oauth_config"]["scopes"]["bot"]
    assert "commands" in scopes
    assert "chat:write" in scopes
    assert "usergroups:read" in scopes, "user-group grants need usergroups.users.list"
    settings = data["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is True
    assert "app_home_opened" in settings["event_subscriptions"]["bot_events"]
    assert data["features"]["app_home"]["home_tab_enabled"] is True
