"""Restore drills: the report of one (pass or fail, the restore point and its age, how long the
restored VM took to be ready, what went wrong and whose VM it is), the screenshot's caption,
each VM's last passing drill for the Home tab, and the VMs overdue for one in the weekly report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.messages.format import human_seconds, mention, when
from bot.mrkdwn import literal
from core.domain.drills import DRILL_OVERDUE_DAYS, Drill, DrillSource
from core.services.drills import DrillOutcome, DrillStatus

DRILL_TITLE = "Restore drill"
SCREENSHOT_TITLE = "Console of the restored VM"
# A Slack user id (U…, W… on Enterprise Grid): mentioned so the person is notified.
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_ERROR_SHOWN = 1200


def age_text(age: timedelta) -> str:
    """How old a restore point is, as people say it: '3 d 4 h', '5 h 12 min', '40 min'."""
    minutes = int(age.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def who(user: str | None) -> str:
    if user is None:
        return ""
    return mention(user) if _SLACK_USER.match(user) else literal(user)


def drill_title(vm: str, label: str | None, by: str) -> str:
    what = f" `{literal(label)}`" if label else " (newest restore point)"
    return f"*{DRILL_TITLE}* {literal(vm)}{what} by {who(by)}"


def _point(drill: Drill) -> str:
    where = (
        "backup store" if drill.source is DrillSource.STORE else "full snapshot in the VM's image"
    )
    return (
        f"restore point `{literal(drill.label)}` ({where}), taken {when(drill.point_created_at)}"
        f", *{age_text(drill.point_age)} old*: a recovery from it now would lose what changed "
        "since then"
    )


def drill_report(outcome: DrillOutcome) -> str:
    """The report in the channel: pass or fail, the point and its age, time until ready, the
    throwaway VM (removed), and for a failure what went wrong, mentioning the VM's owner."""
    drill = outcome.drill
    vm = literal(drill.vm_name)
    lines = []
    if outcome.passed:
        ready = human_seconds(drill.ready_seconds or 0.0)
        lines.append(f"✅ *Drill passed*: {vm} restores and boots.")
        lines.append(f"• From the {_point(drill)}.")
        lines.append(
            f"• Ready *{ready}* after it was started: about how long a real recovery's boot "
            "takes (the restore itself comes on top)."
        )
        if outcome.signal is not None:
            lines.append(f"• Judged ready by {literal(outcome.signal.describe())}.")
    else:
        owner = who(outcome.owner)
        lines.append(
            f"❌ *Drill failed*: {vm} did not come back from its restore point"
            + (f" — {owner}, please look." if owner else ".")
        )
        lines.append(f"• From the {_point(drill)}.")
        error = drill.error or "no reason was recorded"
        if len(error) > _ERROR_SHOWN:
            error = error[:_ERROR_SHOWN] + "…"
        lines.append(f"• What went wrong:\n```{literal(error)}```")
        if outcome.signal is not None:
            lines.append(f"• It was waiting for {literal(outcome.signal.describe())}.")
    if outcome.memory_not_included:
        lines.append(
            "• Disk state only: the snapshot's memory state is not part of a drill (a restore "
            "with /restore brings it back; the drill booted the disks afresh)."
        )
    for note in outcome.notes:
        lines.append(f"• Note: {literal(note)}")
    lines.append(
        f"• Throwaway VM `{literal(drill.throwaway_name)}` (no network, its own disk) was "
        f"removed with its files; the original {vm} was not touched."
    )
    if drill.screenshot is None:
        lines.append("• No screenshot: the VM has no display.")
    return "\n".join(lines)


def screenshot_caption(outcome: DrillOutcome) -> str:
    drill = outcome.drill
    state = "ready" if outcome.passed else "when the drill gave up"
    return (
        f"{SCREENSHOT_TITLE} {literal(drill.vm_name)} ({literal(drill.label)}), {state}, "
        f"drill `{drill.id}`"
    )


def screenshot_alt(outcome: DrillOutcome) -> str:
    drill = outcome.drill
    result = "passed" if outcome.passed else "failed"
    return (
        f"Screenshot of the console of {drill.vm_name} restored from {drill.label} in a drill "
        f"that {result}"
    )


def screenshot_not_posted(problem: str) -> str:
    return f"(The console screenshot could not be posted: {literal(problem)}.)"


def screenshot_saved(path: str) -> str:
    return f"Console screenshot: {literal(path)}"


def drill_status_line(status: DrillStatus, now: datetime) -> str:
    """One VM on the Home tab: its last passing drill, or that it has none."""
    vm = literal(status.vm_name)
    last = status.last_passed
    if last is None:
        return f"⚠️ {vm}: never passed a restore drill — `/snapshot drill {vm}`"
    ago = age_text(now - last.started_at)
    ready = human_seconds(last.ready_seconds or 0.0)
    flag = "⚠️ " if status.overdue else ""
    return (
        f"{flag}{vm}: last passing drill {ago} ago (`{literal(last.label)}`, "
        f"{age_text(last.point_age)} old, ready in {ready})"
    )


def drill_status(statuses: Sequence[DrillStatus], now: datetime) -> str:
    if not statuses:
        return "*Restore drills*: no VMs."
    lines = [drill_status_line(s, now) for s in statuses]
    return "*Restore drills*\n" + "\n".join(lines)


def drills_overdue(statuses: Sequence[DrillStatus], now: datetime) -> str | None:
    """The weekly report's flag: VMs without a passing drill in ``DRILL_OVERDUE_DAYS`` days
    (None when every VM had one)."""
    late = [s for s in statuses if s.overdue]
    if not late:
        return None
    lines = [
        f"⚠️ *{len(late)} VM(s) without a passing restore drill in {DRILL_OVERDUE_DAYS} days*: "
        "nobody has shown their backups restore."
    ]
    for status in late:
        last = status.last_passed
        since = "never" if last is None else f"last {age_text(now - last.started_at)} ago"
        lines.append(f"• {literal(status.vm_name)}: {since}")
    lines.append("Run `/snapshot drill <vm>`, or add a schedule with --drill.")
    return "\n".join(lines)


def drill_outcome_line(outcome: DrillOutcome) -> str:
    """A scheduled run's line for one VM."""
    drill = outcome.drill
    if outcome.passed:
        return (
            f"drill of `{literal(drill.label)}` ({age_text(drill.point_age)} old) passed, ready "
            f"in {human_seconds(drill.ready_seconds or 0.0)}"
        )
    owner = who(outcome.owner)
    return f"drill of `{literal(drill.label)}` FAILED: {literal((drill.error or '')[:300])}" + (
        f" ({owner})" if owner else ""
    )


def no_drills() -> str:
    return (
        "Restore drills need snapbot on the VMs' host with a backup store (SNAPBOT_BACKUP_DIR): "
        "it restores into a throwaway VM there. Configure a store and restart snapbot."
    )


DRILL_SCHEDULE_WORDS = "restore drills (each VM not drilled for 30 days, one at a time)"
