"""The offsite copy of the backup store: ``/snapshot offsite [status|copy|verify]``."""

from __future__ import annotations

from bot.messages.format import human_bytes, human_seconds, when
from bot.mrkdwn import literal
from core.domain.backups import VerifyReport
from core.domain.offsite import CopyReport, MarkedPoint, OffsiteView

_LISTED = 10


def no_offsite() -> str:
    return (
        "No offsite copy is configured. Set SNAPBOT_OFFSITE_URL (an S3-compatible endpoint) and "
        "SNAPBOT_OFFSITE_BUCKET, with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in snapbot's "
        "environment, then restart it."
    )


def offsite_status(view: OffsiteView) -> str:
    status = view.status
    days = status.delete_after.days
    lines = [
        f"*Offsite copy* at `{literal(status.where)}`: {status.offsite_points} restore point(s), "
        f"{status.chunks} stored piece(s), {human_bytes(status.stored_bytes)}.",
    ]
    if status.local_points == 0 and status.offsite_points and not status.pending:
        lines.append("No local backup store here: restores read the offsite copy.")
    elif status.pending:
        lines.append(
            f"⏳ {len(status.pending)} of {status.local_points} local restore point(s) not "
            "copied yet" + (": copying now." if view.copying else ".")
        )
    else:
        lines.append(f"✅ All {status.local_points} local restore point(s) are copied.")
    if view.last_copy is not None and view.last_copy_at is not None:
        lines.append("Last copy " + when(view.last_copy_at) + ": " + _copied(view.last_copy))
    if view.last_error is not None:
        lines.append(f"⚠️ The last copy failed: {literal(view.last_error)}")
    if status.marked:
        lines.append(
            f"Deleted from the store, kept offsite for {days} day(s) after deletion; until then "
            "/snapshot offsite undelete <vm> <name> brings one back:"
        )
        lines += [
            f"  {literal(m.vm_name or m.ref.vm_uuid)} `{literal(m.label or m.ref.point_id)}`: "
            f"deleted offsite {when(m.delete_at)}"
            for m in status.marked[:_LISTED]
        ]
        if len(status.marked) > _LISTED:
            lines.append(f"  … and {len(status.marked) - _LISTED} more")
    else:
        lines.append(f"A restore point deleted from the store stays offsite for {days} day(s).")
    return "\n".join(lines)


def _copied(report: CopyReport) -> str:
    text = (
        f"{len(report.points_copied)} new restore point(s), {report.chunks_uploaded} piece(s), "
        f"{human_bytes(report.bytes_uploaded)} uploaded in {human_seconds(report.seconds)}"
    )
    if report.points_skipped:
        text += f"; {len(report.points_skipped)} skipped (damaged in the store: /snapshot verify)"
    return text + "."


def offsite_copied(report: CopyReport) -> str:
    lines = [
        "*Offsite copy*: "
        + _copied(report)
        + f" {report.points_present} restore point(s) were there already."
    ]
    lines += [f"  ⚠️ {literal(s)}" for s in report.points_skipped[:_LISTED]]
    return "\n".join(lines)


def offsite_verified(report: VerifyReport) -> str:
    if not report.points_checked:
        return "Nothing to verify: the offsite copy holds no restore point yet."
    lines = [
        f"Verified the offsite copy on its own: {len(report.points_checked)} restore point(s), "
        f"{report.chunks_checked} piece(s), {human_bytes(report.bytes_checked)} downloaded and "
        "checked against their checksums."
    ]
    if report.ok:
        lines.append("✅ Everything is intact.")
        return "\n".join(lines)
    bad = len(report.damaged_chunks) + len(report.missing_chunks)
    lines.append(
        f"⚠️ {len(report.damaged_chunks)} damaged and {len(report.missing_chunks)} missing "
        f"piece(s); {len(report.damaged_points)} restore point(s) affected."
    )
    lines += [f"  {literal(f)}" for f in report.damaged_files[:_LISTED]]
    if bad:
        lines.append(
            "Damaged pieces were set aside offsite (under damaged/); the next copy uploads them "
            "again from the local store where it still holds them (/snapshot offsite copy)."
        )
    return "\n".join(lines)


def offsite_brought_back(point: MarkedPoint) -> str:
    name = literal(point.vm_name)
    label = literal(point.label or point.ref.point_id)
    return (
        f"↩️ Restore point `{label}` of {name} is back in the backup store from the offsite copy "
        f"(deleted {when(point.marked_at)}); its offsite deletion is cancelled. Restore it with "
        f"/restore {name} {label}."
    )
