"""``/snapshot usage [<vm>|<host>]``: what it parses to, and what it refuses."""

from __future__ import annotations

import pytest

from bot.grammar import Help, ShowUsage, UsageError, parse, parse_line


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("usage", ShowUsage(None)),
        ("usage web-01", ShowUsage("web-01")),
        ("usage 'hv-01.example.org'", ShowUsage("hv-01.example.org")),
        ("help", Help("snapshot")),
    ],
)
def test_usage_parses(text: str, expected: object) -> None:
    assert parse("snapshot", text) == expected


def test_usage_from_a_console_line() -> None:
    assert parse_line("/snapshot usage db-02") == ShowUsage("db-02")


def test_usage_takes_one_name() -> None:
    with pytest.raises(UsageError) as caught:
        parse("snapshot", "usage web-01 web-02")
    assert "usage takes one VM or host name" in caught.value.problem
    assert "'web-02'" in caught.value.problem


def test_usage_takes_no_options() -> None:
    with pytest.raises(UsageError) as caught:
        parse("snapshot", "usage web-01 --hold")
    assert caught.value.problem == "--hold does not go with /snapshot usage"


def test_usage_is_in_the_help() -> None:
    from bot import messages

    assert "/snapshot usage [<vm>|<host>]" in messages.help_text("snapshot")
