"""Hostile input at the console: no line ends the loop (and the scheduler beside it)."""

from __future__ import annotations

import io

import pytest

from bot import console as console_module
from bot.console import Console
from bot.grammar import Command
from core.bootstrap import Core
from tests.conftest import Services


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
