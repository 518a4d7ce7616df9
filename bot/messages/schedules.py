"""Schedules: the table, adding and removing one, a run's report in its channel, the digest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.messages.backups import consistency_text, transfer_text
from bot.messages.drills import DRILL_SCHEDULE_WORDS, drill_outcome_line
from bot.messages.errors import error_text
from bot.messages.format import human_bytes, human_seconds, mention, when
from bot.messages.hosts import host_unreachable
from bot.messages.retention import held_during_prune
from bot.mrkdwn import literal
from core.domain.schedule import Schedule, ScheduleTask
from core.domain.vm import FreeSpace
from core.services.backups import VerifyResult
from core.services.reports import Digest, RunReport, VmOutcome


def schedule_line(s: Schedule) -> str:
    policy = s.policy.describe() if s.policy else "no pruning"
    if s.policy and s.policy.include_manual:
        policy += ", manual snapshots included"
    if s.policy and s.policy.safety_keep_last is not None:
        policy += f", safety-keep-last={s.policy.safety_keep_last}"
    if s.policy and s.policy.safety_keep_days is not None:
        policy += f", safety-keep-days={s.policy.safety_keep_days}"
    if s.archive:
        policy += ", archiving full snapshots to the backup store instead of deleting them"
    where = f"<#{literal(s.channel)}>" if s.channel else "no channel"
    last = f", last slot {when(s.last_fire)}" if s.last_fire else ""
    keep = "" if s.task in (ScheduleTask.VERIFY, ScheduleTask.DRILL) else f"keep {policy}; "
    return (
        f"  #{s.id} {literal(s.name)}: {literal(s.vms)} {literal(s.when.describe())}; "
        f"{_TASKS[s.task]}; {keep}reports to {where}; owner {literal(s.owner)}{last}"
    )


_TASKS = {
    ScheduleTask.SNAPSHOT: "full snapshots",
    ScheduleTask.INCREMENTAL: "incremental snapshots (backup store)",
    ScheduleTask.VERIFY: "verification of the backup store",
    ScheduleTask.DRILL: DRILL_SCHEDULE_WORDS,
}


def schedules_table(schedules: Sequence[Schedule]) -> str:
    if not schedules:
        return (
            "No schedules. Add one: /snapshot schedule add nightly all daily 02:00 --keep-daily 7"
        )
    return "Schedules:\n" + "\n".join(schedule_line(s) for s in schedules)


def schedule_added(s: Schedule, first: datetime | None) -> str:
    nxt = f" First run {when(first)}." if first else ""
    return f"Schedule added:\n{schedule_line(s)}.{nxt}"


def schedule_removed(s: Schedule) -> str:
    return (
        f"Schedule #{s.id} {literal(s.name)} removed; its snapshots stay (prune them with /prune)."
    )


def run_taken(s: Schedule) -> str:
    return (
        f"Schedule {literal(s.name)} already has a run for this moment (another request or process "
        "started it); nothing more to do."
    )


def _missed_text(report: RunReport) -> str:
    times = ", ".join(when(m) for m in report.missed)
    return f"⚠️ Missed {len(report.missed)} run(s) while snapbot was down or stalled: {times}."


def run_report(report: RunReport) -> str:
    """The message a scheduled run posts in its channel."""
    s = report.schedule
    owner = f" {mention(s.owner)}" if report.failed or report.stale or report.unreachable else ""
    if report.fire_time is None:
        return (
            f"*Schedule {literal(s.name)}*: {_missed_text(report)} It ran no catch-up: the "
            f"newest slot is older than the {human_seconds(s.grace.total_seconds())} grace "
            f"window.{owner}"
        )
    kind = "catch-up run" if report.catch_up else "run"
    icon = "❌" if report.failed or report.unreachable else "✅"
    lines = [
        f"{icon} *Schedule {literal(s.name)}* {kind} for {when(report.fire_time)} finished in "
        f"{human_seconds(report.seconds)}{owner}"
    ]
    if report.missed:
        lines.append(_missed_text(report))
    if report.no_vms:
        lines.append(f"No VM matches `{literal(s.vms)}`.")
    for host, outcomes in report.by_host():
        if host is not None:
            lines.append(f"Host *{literal(host)}*:")
        lines.extend(_outcome_lines(outcomes))
    for down in report.unreachable:
        lines.append(f"❌ {host_unreachable(down)} This run could not reach its VMs there.")
    if report.disk_by_host:
        lines.extend(
            f"Host *{literal(host)}*: "
            + _storage(report.disk_by_host[host], report.free_by_host.get(host))
            for host in report.hosts
            if host in report.disk_by_host
        )
    else:
        lines.append(_storage(report.disk_bytes, report.free))
    for f in report.stale:
        level = "CRITICAL" if f.critical else "warning"
        age = "has no snapshot" if f.age is None else f"newest snapshot is {_age(f.age)} old"
        lines.append(
            f"{level}: {literal(f.vm)} {age} (this schedule promises {literal(s.when.describe())})."
        )
    return "\n".join(lines)


def _outcome_lines(outcomes: Sequence[VmOutcome]) -> list[str]:
    lines: list[str] = []
    for o in outcomes:
        if o.drill is not None:
            lines.append(f"• {literal(o.vm)}: {drill_outcome_line(o.drill)}")
            continue
        if o.skipped and o.error is not None:
            lines.append(f"• {literal(o.vm)}: skipped — {error_text(o.error)}")
            continue
        if o.error is not None:
            state = f" The VM is {literal(o.vm_state)}." if o.vm_state else ""
            lines.append(f"• {literal(o.vm)}: FAILED — {error_text(o.error)}{state}")
            continue
        if o.verify is not None:
            lines.append(f"• {literal(o.vm)}: {_verified(o.verify)}")
            continue
        memory = f", memory {human_bytes(o.memory_bytes)}" if o.memory_bytes else ""
        if o.backup is not None:
            memory = (
                f": {transfer_text(o.backup.figures)}; "
                f"{consistency_text(o.backup.consistency, o.backup.note)}"
            )
        lines.append(
            f"• {literal(o.vm)}: `{literal(o.label)}` in {human_seconds(o.seconds)}{memory}"
        )
        if o.prune is not None:
            if o.prune.skipped:
                lines.append(f"    not pruned: {literal(o.prune.skipped)}")
            elif o.prune.deleted:
                pruned = ", ".join(
                    f"`{literal(d.snapshot.label)}` "
                    f"({literal(o.prune_reasons.get(d.snapshot.label, 'policy'))})"
                    for d in o.prune.deleted
                )
                lines.append(
                    f"    pruned {len(o.prune.deleted)} ({pruned}), freed "
                    f"{human_bytes(o.prune.freed_bytes)}"
                )
            if o.prune.archived:
                archived = ", ".join(f"`{literal(a.snapshot.label)}`" for a in o.prune.archived)
                lines.append(
                    f"    archived {len(o.prune.archived)} to the backup store ({archived}) "
                    "instead of deleting them"
                )
            lines.extend(held_during_prune(h) for h in o.prune.held)
        if o.prune_error is not None:
            lines.append(f"    prune failed: {error_text(o.prune_error)}")
    return lines


def _verified(result: VerifyResult) -> str:
    report = result.report
    checked = (
        f"verified {len(report.points_checked)} restore point(s), "
        f"{human_bytes(report.bytes_checked)}"
    )
    if not result.damaged:
        return f"{checked}: intact"
    damaged = ", ".join(f"`{literal(s.label)}`" for s in result.damaged[:10])
    more = f" and {len(result.damaged) - 10} more" if len(result.damaged) > 10 else ""
    return (
        f"{checked}: ⚠️ DAMAGED: {damaged}{more}. The next incremental snapshot stores a damaged "
        "piece again where the VM still has that data; `/snapshot verify` names the pieces"
    )


def _storage(disk_bytes: int, free: FreeSpace | None) -> str:
    where = f"; {human_bytes(free.available_bytes)} free in {literal(free.path)}" if free else ""
    return f"Storage: disk images {human_bytes(disk_bytes)}{where}."


def _age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} h"


def report_undeliverable(channel: str, error: str) -> str:
    return (
        f"Could not post this schedule report in <#{literal(channel)}> ({literal(error)}); "
        "invite the bot there or change the schedule's channel."
    )


def digest_text(digest: Digest) -> str:
    """The daily overview."""
    lines = ["*snapbot daily digest*"]
    for line in digest.lines:
        newest = "no snapshot" if line.newest_age is None else f"newest {_age(line.newest_age)} ago"
        held = f", {line.held} held" if line.held else ""
        flag = ""
        if line.stale is not None:
            flag = " — CRITICAL: too old" if line.stale.critical else " — warning: getting old"
        lines.append(
            f"• {literal(line.vm)}: {line.snapshots} snapshot(s){held}, {newest}, disk images "
            f"{human_bytes(line.disk_bytes)}{flag}"
        )
    lines.extend(f"• {host_unreachable(down)}" for down in digest.unreachable)
    for schedule, status in digest.schedules:
        lines.append(f"Schedule {literal(schedule.name)}: last run {status or 'not yet'}")
    total = sum(line.disk_bytes or 0 for line in digest.lines)
    lines.append(_storage(total, digest.free))
    return "\n".join(lines)
