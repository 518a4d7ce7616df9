from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import messages
from bot.grammar import (
    AddSchedule,
    ArchiveSnapshot,
    CreateSnapshot,
    DeleteSnapshot,
    Help,
    ListSnapshots,
    ListVms,
    Prune,
    RenameSnapshot,
    Restore,
    UsageError,
    VerifyBackups,
    parse,
    parse_line,
)
from tests.fuzz.strategies import EXAMPLES, command_line


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/snapshot web-01 before-upgrade", CreateSnapshot("web-01", "before-upgrade", "")),
        (
            '/snapshot web-01 pre --desc "Before PostgreSQL 15"',
            CreateSnapshot("web-01", "pre", "Before PostgreSQL 15"),
        ),
        ("/snapshot web-01 pre --desc=short", CreateSnapshot("web-01", "pre", "short")),
        (
            "/snapshot web-01 pre --desc “smart quotes”",
            CreateSnapshot("web-01", "pre", "smart quotes"),
        ),
        ("/snapshot create list x", CreateSnapshot("list", "x", "")),
        ("/snapshot list", ListSnapshots(None)),
        ("/snapshot list web-01", ListSnapshots("web-01")),
        ("/snapshot vms", ListVms()),
        ("/snapshot delete web-01 old", DeleteSnapshot("web-01", "old")),
        ("/snapshot rename web-01 a b", RenameSnapshot("web-01", "a", "b")),
        ("/snapshot help", Help("snapshot")),
        ("/snapshot", Help("snapshot")),
        ("/restore web-01 pre", Restore("web-01", "pre", True)),
        ("/restore web-01 pre --no-safety-snapshot", Restore("web-01", "pre", False)),
        ("/restore", Help("restore")),
        ("/restore web-01", Restore("web-01", None, True)),
        (
            "/prune web-01 --keep-daily 7 --keep-last=3",
            Prune("web-01", (("last", 3), ("daily", 7)), False),
        ),
        ("/prune all --keep-weekly 4 --dry-run", Prune(None, (("weekly", 4),), True)),
        ("/prune web-01", Prune("web-01", (), False)),
        ("/prune", Help("prune")),
        (
            "/snapshot web-01 nightly --incremental",
            CreateSnapshot("web-01", "nightly", "", incremental=True),
        ),
        (
            "/snapshot web-01 pre --incremental --hold --desc 'pg 15'",
            CreateSnapshot("web-01", "pre", "pg 15", hold=True, incremental=True),
        ),
        ("/snapshot archive web-01 old", ArchiveSnapshot("web-01", "old")),
        ("/snapshot verify", VerifyBackups(None, None)),
        ("/snapshot verify web-01", VerifyBackups("web-01", None)),
        ("/snapshot verify web-01 nightly", VerifyBackups("web-01", "nightly")),
        ("/restore web-01 pre --as web-01-copy", Restore("web-01", "pre", True, "web-01-copy")),
        ("/restore web-01 pre --as=Web_01.test", Restore("web-01", "pre", True, "Web_01.test")),
        ("/restore gone-vm --as gone-2", Restore("gone-vm", None, True, "gone-2")),
    ],
)
def test_grammar(line: str, expected: object) -> None:
    assert parse_line(line) == expected


@pytest.mark.parametrize(
    ("line", "command", "problem"),
    [
        ("/snapshot web-01", "snapshot", "missing the VM and the snapshot name"),
        ("/snapshot web-01 a b", "snapshot", "unexpected 'b'"),
        ("/snapshot delete web-01", "snapshot", "missing"),
        ("/snapshot rename web-01 a", "snapshot", "missing"),
        ("/snapshot web-01 a --size 3", "snapshot", "unknown option --size"),
        ("/snapshot web-01 a --desc", "snapshot", "--desc needs a value"),
        ('/snapshot web-01 a --desc "open', "snapshot", "quotes do not match"),
        ("/snapshot list a b", "snapshot", "at most one"),
        ("/restore web-01 a b", "restore", "unexpected 'b'"),
        ("/prune web-01 --keep-daily seven", "prune", "--keep-daily needs a whole number"),
        ("/prune web-01 --keep-dialy 7", "prune", "unknown option --keep-dialy"),
        ("/prune web-01 db-01", "prune", "unexpected 'db-01'"),
        ("/frobnicate x", None, "unknown command /frobnicate"),
        # Each of these raised ValueError out of the grammar and stopped the console.
        ("/prune web-01 --keep-daily ²", "prune", "--keep-daily needs a whole number"),
        ("/prune web-01 --keep-last=١٢", "prune", "--keep-last needs a whole number"),
        ("/prune web-01 --keep-daily " + "9" * 3000, "prune", "too large; the limit is"),
        (
            "/snapshot schedule add n all daily 02:00 --keep-last ³",
            "snapshot",
            "--keep-last needs a whole number",
        ),
        ("/prune web-01 --keep-daily 100001", "prune", "too large; the limit is 100000"),
        ("/snapshot web-01 x --keep-daily", "snapshot", "--keep-daily needs a value"),
        ("/snapshot schedule add n * --every", "snapshot", "unknown option --every"),
        ("/prune web-01 --keep-last 1 --keep-last 2", "prune", "--keep-last is given twice"),
        ("/snapshot web-01 x --desc a --description b", "snapshot", "same option"),
        ("/snapshot web-01 " + "x" * 5000, "snapshot", "the limit is 4000"),
        # Invalid UTF-8 on a pipe (surrogateescape): libvirt raised UnicodeEncodeError on it.
        ("/snapshot \udcff\udcfe x", "snapshot", "bytes that are not UTF-8 (U+DCFF)"),
        ("snapshot x y", None, "commands start with /"),
        ("/restore web-01 a --as web/01", "restore", "the new VM's name 'web/01' contains '/'"),
        ("/restore web-01 a --as 'web 01'", "restore", "contains a space"),
        ("/restore web-01 a --as wéb", "restore", "contains 'é'; use only ASCII letters"),
        ("/restore web-01 a --as " + "w" * 65, "restore", "65 characters long; the limit is 64"),
        ("/restore web-01 a --as .hidden", "restore", "starts with '.'"),
        ("/restore web-01 a --as", "restore", "--as needs a value"),
        ("/restore web-01 a --as=", "restore", "--as needs the new VM's name"),
        ("/restore web-01 a --as web-01", "restore", "--as names the new VM"),
        ("/restore web-01 a --as c --no-safety-snapshot", "restore", "does not go with --as"),
        ("/snapshot web-01 a --incremental --no-space-check", "snapshot", "needs none"),
        ("/snapshot archive web-01", "snapshot", "missing the VM and the snapshot name"),
        ("/snapshot archive web-01 a --desc x", "snapshot", "--desc does not go with"),
        ("/snapshot verify web-01 a b", "snapshot", "unexpected 'b'"),
        ("/snapshot list --incremental", "snapshot", "--incremental does not go with"),
    ],
)
def test_wrong_usage_names_the_problem_and_shows_usage(
    line: str, command: str | None, problem: str
) -> None:
    with pytest.raises(UsageError) as info:
        parse_line(line)
    assert info.value.command == command
    assert problem in info.value.problem
    text = messages.usage_error_text(info.value)
    if command is not None:
        assert messages.usage(command) in text


@given(st.text(max_size=300))
def test_parser_never_crashes(text: str) -> None:
    for command in ("snapshot", "restore", "prune"):
        with contextlib.suppress(UsageError):
            parse(command, text)


def test_a_huge_but_allowed_count_is_a_number() -> None:
    assert parse_line("/prune web-01 --keep-hourly 0008760") == Prune(
        "web-01", (("hourly", 8760),), False
    )


def test_errors_echo_long_input_shortened() -> None:
    with pytest.raises(UsageError) as info:
        parse_line("/restore web-01 a " + "b" * 3000)
    assert len(info.value.problem) < 120


@settings(max_examples=EXAMPLES * 5)
@given(command_line(wire=False))
def test_real_commands_with_hostile_values_parse_or_name_the_problem(line: str) -> None:
    """Random text never gets past "unknown command"; these are real verbs and options."""
    problem: UsageError | None = None
    try:
        parse_line(line)
    except UsageError as exc:
        problem = exc
    if problem is not None:
        assert problem.problem
        assert len(messages.usage_error_text(problem)) < 3000, "it names the problem, briefly"


def test_schedules_can_take_incrementals() -> None:
    parsed = parse_line("/snapshot schedule add nightly web-* daily 02:00 --incremental")
    assert isinstance(parsed, AddSchedule)
    assert parsed.incremental
    plain = parse_line("/snapshot schedule add hourly web-* cron '0 * * * *'")
    assert isinstance(plain, AddSchedule)
    assert not plain.incremental
