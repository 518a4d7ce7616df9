"""Hostile input at the console: no line ends the loop (and the scheduler beside it)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from bot import console as console_module
from bot.console import Console
from bot.grammar import Command
from core.bootstrap import Core
from tests.conftest import Services
from tests.fuzz.strategies import EXAMPLES, LONG_EXAMPLES, command_line, hostile
from tests.reliability.figures import record


async def run(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    status = await Console(core, io.StringIO(script), out).run()
    return status, out.getvalue()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("/prune web-01 --keep-daily ²", "--keep-daily needs a whole number such as 7, not '²'"),
        ("/prune web-01 --keep-daily " + "9" * 3000, "too large; the limit is 100000"),
        ("/snapshot schedule add n all monthly ² 02:00", "not a day for a monthly schedule"),
        ("/snapshot schedule add n all cron '99 99 * * *'", "cannot use that time"),
        # Each of these was stored past a column's length: a database error, not a refusal.
        ("/snapshot schedule add n " + "é" * 300 + " daily 02:00", "the limit is 255"),
        (
            "/snapshot schedule add n all cron '" + ",".join(map(str, range(60))) + " * * * *'",
            "longer than 64 characters",
        ),
        ("/snapshot schedule add n all daily 02:00 --channel " + "c" * 100, "is not a channel"),
    ],
)
async def test_a_bad_line_is_refused_and_the_console_goes_on(
    core: Core, services: Services, line: str, problem: str
) -> None:
    status, out = await run(core, f"{line}\n/snapshot web-01 after\n")
    assert status == 1, out
    assert problem in out
    assert "Something went wrong inside snapbot" not in out, "a clear refusal, not a crash"
    assert [s.label for s in await services.catalogue.snapshots()] == ["after"]
    assert await core.schedules.list() == [], "nothing half-made is stored"


async def test_an_unexpected_error_is_answered_with_a_reference_and_the_loop_goes_on(
    core: Core, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = console_module.parse_line

    def exploding(line: str) -> Command:
        if "boom" in line:
            raise KeyError("a bug")
        return real(line)

    monkeypatch.setattr(console_module, "parse_line", exploding)
    status, out = await run(core, "/snapshot web-01 boom\n/snapshot web-01 after\n")
    assert status == 1
    assert "Something went wrong inside snapbot (reference " in out
    assert [s.label for s in await services.catalogue.snapshots()] == ["after"]


# --- fuzz: real commands, hostile values ------------------------------------------------------

INTERNAL = "Something went wrong inside snapbot"


class Tally:
    """Inputs tried and crashes seen, for the reliability table."""

    def __init__(self) -> None:
        self.tried = 0
        self.crashes: list[str] = []


async def _one_console_input(core: Core, line: str, answer: str, tally: Tally) -> None:
    tally.tried += 1
    out = io.StringIO()
    # The answer feeds a confirmation prompt, if the line asks one; the last line proves the
    # loop is still there.
    script = f"{line}\n{answer}\n/snapshot vms\n".replace("\r", " ")
    await Console(core, io.StringIO(script), out).run()
    text = out.getvalue()
    if INTERNAL in text or "VMs:" not in text:
        tally.crashes.append(line)
    assert INTERNAL not in text, f"{line!r} crashed:\n{text}"
    assert "VMs:" in text, f"{line!r} ended the console:\n{text}"
    assert "\x1b" not in text, "no terminal escape sequence reaches the screen"


def _console_fuzz(examples: int) -> Callable[..., Awaitable[None]]:
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(line=command_line(wire=False), answer=hostile(wire=False))
    async def fuzz(core: Core, services: Services, line: str, answer: str) -> None:
        await _one_console_input(core, line.replace("\n", " "), answer.replace("\n", " "), TALLY)

    return fuzz


TALLY = Tally()
test_console_survives_hostile_commands = _console_fuzz(EXAMPLES)


@pytest.mark.reliability
async def test_console_survives_hostile_commands_long(core: Core, services: Services) -> None:
    tally = Tally()

    @settings(
        max_examples=LONG_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(line=command_line(wire=False), answer=hostile(wire=False))
    def fuzz(line: str, answer: str) -> None:
        pending.append((line.replace("\n", " "), answer.replace("\n", " ")))

    pending: list[tuple[str, str]] = []
    fuzz()
    for line, answer in pending:
        await _one_console_input(core, line, answer, tally)
    record(
        "fuzz: console",
        f"real commands of every verb and option with hostile values, {LONG_EXAMPLES} drawn",
        f"{tally.tried} inputs tried, {len(tally.crashes)} crashes",
        passed=not tally.crashes,
    )


def test_bytes_that_are_not_utf8_on_a_pipe_are_refused_and_the_console_goes_on(
    tmp_path: Path,
) -> None:
    """``snapbot console`` as a process, its stdin strict UTF-8 (as in most locales): a line of
    Latin-1 bytes raised UnicodeDecodeError out of the read loop and ended the session."""
    env = dict(os.environ)
    env.update(
        LIBVIRT_URI="test:///default",  # libvirt's built-in driver: no daemon, nothing real
        SNAPBOT_DATA_DIR=str(tmp_path),
        PYTHONIOENCODING="utf-8:strict",
    )
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"],
        input=b"/snapshot caf\xe9 x\n/snapshot vms\n",
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    out = done.stdout.decode()
    assert "bytes that are not UTF-8 (U+DCE9)" in out, done.stderr.decode()[-2000:]
    assert "VMs:" in out
    assert INTERNAL not in out
    assert done.returncode == 1, "the refused line counts as failed; the session ended normally"
