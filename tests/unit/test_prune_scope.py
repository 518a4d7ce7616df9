"""What a prune may touch besides scheduled snapshots: manual ones with --include-manual, and
safety snapshots by their own rule (configured in Settings, or per prune and per schedule), from
the console as an operator types it."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from bot.console import Console, ConsoleReporter
from bot.grammar import AddSchedule, Prune, RetentionScope, UsageError, parse
from core.bootstrap import Core, wire
from core.catalogue.models import ScheduleRow
from core.catalogue.store import SystemClock
from core.config import Settings
from core.domain.retention import RetentionPolicy
from core.domain.schedule import parse_when
from core.domain.snapshot import Origin
from core.errors import InvalidInput
from scheduler.service import build_scheduler
from tests.conftest import ALICE, Services


async def run(core: Core, script: str) -> tuple[int, str]:
    out = io.StringIO()
    scheduler = build_scheduler(core, ConsoleReporter(out))
    status = await Console(core, io.StringIO(script), out, scheduler).run()
    return status, out.getvalue()


def line_of(out: str, label: str) -> str:
    return next(line for line in out.splitlines() if f" {label} " in line)


async def snapshots_of_every_kind(services: Services) -> None:
    """web-01: two manual snapshots between two scheduled ones, then four restores' safety
    snapshots (the fake hypervisor dates them in 2023: all older than 14 days)."""
    for label, origin in (
        ("sched-0", Origin.SCHEDULED),
        ("manual-0", Origin.MANUAL),
        ("manual-1", Origin.MANUAL),
        ("sched-1", Origin.SCHEDULED),
    ):
        services.hv._clock += 86_400
        await services.service.create_snapshot("web-01", label, actor=ALICE, origin=origin)
    for _ in range(4):
        await services.service.restore("web-01", "sched-1", actor=ALICE)


async def labels(services: Services) -> set[str]:
    return {s.label for s in await services.catalogue.snapshots()}


async def test_console_prune_keeps_manual_snapshots_unless_include_manual(
    core: Core, services: Services
) -> None:
    await snapshots_of_every_kind(services)
    status, out = await run(core, "/prune web-01 --keep-last 1 --dry-run\n")
    assert status == 0, out
    assert "manual snapshots kept" in out
    assert line_of(out, "manual-0").rstrip().endswith("manual")
    assert "DELETE" in line_of(out, "sched-0")

    status, out = await run(core, "/prune web-01 --keep-last 1 --include-manual\nweb-01\n")
    assert status == 0, out
    assert "manual snapshots included" in out
    assert "DELETE" in line_of(out, "manual-0")
    assert line_of(out, "manual-1").rstrip().endswith("beyond last=1")
    assert "Prune finished" in out
    left = await labels(services)
    assert not left & {"manual-0", "manual-1", "sched-0"}
    assert "sched-1" in left
    safety = [s for s in await services.catalogue.snapshots() if s.origin is Origin.SAFETY]
    assert len(safety) == 3, "the safety rule ran too: the 3 newest stay"


async def test_console_prune_takes_the_safety_rule_per_prune(
    core: Core, services: Services
) -> None:
    await snapshots_of_every_kind(services)
    status, out = await run(
        core, "/prune web-01 --keep-last 1 --safety-keep-last 1 --safety-keep-days 0 --dry-run\n"
    )
    assert status == 0, out
    assert "safety snapshots: the newest and any not older than 0 days" in out
    reasons = [line for line in out.splitlines() if "safety snapshot" in line and "-" in line]
    assert sum("safety snapshot: the newest" in r for r in reasons) == 1
    assert sum("DELETE" in r for r in reasons) == 3
    assert all(
        r.endswith("safety snapshot older than 0 days and not the newest")
        for r in reasons
        if "DELETE" in r
    )
    status, out = await run(core, "/prune web-01 --keep-last 1 --safety-keep-last x\n")
    assert status == 1
    assert "--safety-keep-last needs a whole number such as 7, not 'x'" in out


async def test_the_configured_safety_rule_is_the_default_everywhere(
    core: Core, services: Services
) -> None:
    configured = wire(
        replace(core.settings, safety_keep_last=2),
        services.hv,
        services.catalogue,
        SystemClock(),
        libvirt_uri="fake:///",
    )
    await snapshots_of_every_kind(services)
    status, out = await run(configured, "/prune web-01 --keep-last 1 --dry-run\n")
    assert status == 0, out
    assert "safety snapshots: the 2 newest and any not older than 14 days" in out
    assert out.count("safety snapshot: one of the 2 newest") == 2

    # A schedule stored without a safety rule of its own follows the configuration at run time.
    schedule = await configured.schedules.add(
        "nightly",
        "web-01",
        parse_when(["daily", "02:00"], "UTC"),
        RetentionPolicy.from_counts(last=5),
        None,
        ALICE,
    )
    report = await build_scheduler(configured, ConsoleReporter(io.StringIO())).run_now(schedule)
    assert report is not None
    safety = [s for s in await services.catalogue.snapshots() if s.origin is Origin.SAFETY]
    assert len(safety) == 2


async def test_a_schedule_stored_by_an_older_release_loads_and_prunes_safety_snapshots(
    core: Core, services: Services
) -> None:
    await snapshots_of_every_kind(services)
    schedule = await core.schedules.add(
        "nightly",
        "web-01",
        parse_when(["daily", "02:00"], "UTC"),
        RetentionPolicy.from_counts(last=5),
        None,
        ALICE,
    )
    # The policy JSON as release 0.1 wrote it: no include_manual, no safety fields.
    old = {
        "keep_last": 5,
        "keep_hourly": 0,
        "keep_daily": 0,
        "keep_weekly": 0,
        "keep_monthly": 0,
        "keep_yearly": 0,
        "keep_oldest": True,
    }
    await ScheduleRow.filter(id=schedule.id).update(policy=old)
    (loaded,) = await core.schedules.list()
    assert loaded.policy == RetentionPolicy.from_counts(last=5)

    status, out = await run(core, "/snapshot schedule run nightly\n")
    assert status == 0, out
    safety = [s for s in await services.catalogue.snapshots() if s.origin is Origin.SAFETY]
    assert len(safety) == 3
    assert "safety snapshot older than 14 days and not among the 3 newest" in out
    assert {"manual-0", "manual-1"} <= await labels(services)


def test_settings_read_the_safety_rule_and_refuse_nonsense(tmp_path: Path) -> None:
    base = {"HOME": str(tmp_path)}
    defaults = Settings.load(base)
    assert (defaults.safety_keep_last, defaults.safety_keep_days) == (3, 14)
    configured = Settings.load(
        base | {"SNAPBOT_SAFETY_KEEP_LAST": "1", "SNAPBOT_SAFETY_KEEP_DAYS": "30"}
    )
    assert (configured.safety_keep_last, configured.safety_keep_days) == (1, 30)
    toml = tmp_path / "snapbot.toml"
    toml.write_text("safety_keep_days = 7\n", encoding="utf-8")
    assert Settings.load(base | {"SNAPBOT_CONFIG": str(toml)}).safety_keep_days == 7
    for bad in ("-1", "3.5", "²", "lots"):
        with pytest.raises(InvalidInput, match="SNAPBOT_SAFETY_KEEP_DAYS must be a whole number"):
            Settings.load(base | {"SNAPBOT_SAFETY_KEEP_DAYS": bad})


def test_the_grammar_reads_include_manual_and_the_safety_rule() -> None:
    prune = parse("prune", "web-01 --keep-last 1 --include-manual --safety-keep-last 2")
    assert prune == Prune("web-01", (("last", 1),), False, RetentionScope(True, 2, None))
    assert parse("prune", "all --keep-daily 7").scope == RetentionScope()  # type: ignore[union-attr]
    add = parse(
        "snapshot",
        "schedule add nightly web-* daily 02:00 --keep-daily 7 --safety-keep-days 30 "
        "--include-manual",
    )
    assert isinstance(add, AddSchedule)
    assert add.scope == RetentionScope(True, None, 30)
    for text, problem in (
        ("web-01 --keep-last 1 --include-manual=yes", "--include-manual takes no value"),
        ("web-01 --keep-last 1 --safety-keep-days -3", "--safety-keep-days needs a whole number"),
        ("web-01 --keep-last 1 --safety-keep-last 999999", "is too large"),
        ("web-01 --keep-last 1 --include-manual --include-manual", "given twice"),
    ):
        with pytest.raises(UsageError, match=problem):
            parse("prune", text)
    with pytest.raises(UsageError, match="--include-manual does not go with"):
        parse("snapshot", "web-01 snap --include-manual")
