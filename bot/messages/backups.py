"""Restore points in the backup store: what a backup read and stored, the warning before a
restore from the store (in place, as a copy, or of a VM that no longer exists), archiving a full
snapshot, and what a verification found."""

from __future__ import annotations

from collections.abc import Sequence

from bot.messages.format import human_bytes, human_seconds, when
from bot.mrkdwn import literal
from bot.previews import StoreRestorePreview
from core.domain.backups import Consistency, TransferFigures
from core.domain.snapshot import CatalogueStatus, Snapshot, SnapshotKind
from core.services.backups import ArchiveResult, BackupRestoreResult, BackupResult, VerifyResult

# How each type reads in a listing: what it holds and where it lives.
KIND_WORDS = {
    SnapshotKind.FULL: "full",
    SnapshotKind.INCREMENTAL: "incremental",
    SnapshotKind.ARCHIVED: "archived",
}
_CONSISTENCY = {
    Consistency.FROZEN: "consistent: the guest agent froze the guest's filesystems while the "
    "disks were read",
    Consistency.SHUT_OFF: "consistent: the VM was shut off",
    Consistency.SNAPSHOT: "as consistent as the snapshot it was taken from",
}
_CRASH = "crash-consistent"
_CRASH_MEANS = "as after a power cut: the guest's journals replay when it boots from it"


def no_backup_store() -> str:
    return (
        "No backup store is configured, so incremental snapshots, archives, verification and "
        "restores from the store are not available. Set SNAPBOT_BACKUP_DIR (or backup_dir in "
        "the configuration file) to a directory on another disk or an NFS share, and restart "
        "snapbot."
    )


def consistency_text(consistency: Consistency | str | None, note: str = "") -> str:
    """``crash-consistent: no guest agent answered (as after a power cut…)`` and the like."""
    if isinstance(consistency, str):
        try:
            consistency = Consistency(consistency)
        except ValueError:
            return literal(consistency)
    if consistency is None:
        return "consistency not recorded"
    if consistency is Consistency.CRASH_CONSISTENT:
        why = f": {literal(note)}" if note else ""
        return f"{_CRASH}{why} ({_CRASH_MEANS})"
    return _CONSISTENCY[consistency]


def transfer_text(figures: TransferFigures) -> str:
    """What writing a restore point cost: read, new to the store, and its size on disk."""
    stored = (
        f", {human_bytes(figures.bytes_stored)} on disk after compression"
        if figures.bytes_new
        else ""
    )
    return (
        f"read {human_bytes(figures.bytes_read)}, {human_bytes(figures.bytes_new)} new to the "
        f"backup store{stored}"
    )


def backup_created(result: BackupResult) -> str:
    """``/snapshot <vm> <name> --incremental``: what was read, what was new, how long."""
    s = result.snapshot
    return (
        f"Incremental snapshot `{literal(s.label)}` of {literal(s.vm_name)} stored in the backup "
        f"store in {human_seconds(result.seconds)}: {transfer_text(result.figures)}. "
        f"Logical size {human_bytes(s.logical_bytes)} (disks + configuration, no memory state). "
        f"{_sentence(consistency_text(result.consistency, result.note))} "
        f"The VM is {result.vm_state.value}."
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def store_line(s: Snapshot) -> str:
    """The part of a listing line that only restore points in the store have."""
    parts = [f"logical {human_bytes(s.logical_bytes)}", f"added {human_bytes(s.added_bytes)}"]
    if s.consistency:
        parts.append(literal(s.consistency))
    if s.damage:
        parts.append(f"⚠️ DAMAGED: {literal(s.damage)}")
    if s.status is CatalogueStatus.MISSING:
        parts.append("MISSING from the backup store")
    return " · ".join(parts)


def store_summary(snapshots: Sequence[Snapshot]) -> str | None:
    """A VM's restore points in the store, added up; None when it has none."""
    stored = [s for s in snapshots if s.kind.in_backup_store]
    if not stored:
        return None
    added = sum(s.added_bytes or 0 for s in stored)
    damaged = sum(1 for s in stored if s.damage)
    damage = f"; {damaged} damaged (see /snapshot verify)" if damaged else ""
    return (
        f"backup store: {len(stored)} restore point(s), each complete on its own; together they "
        f"added {human_bytes(added)} (pieces shared between points are stored once){damage}"
    )


def restore_store_warning(preview: StoreRestorePreview) -> str:
    """The confirmation text before a restore from the backup store."""
    s = preview.snapshot
    memory = (
        "There is no memory state in the backup store: the VM boots from the restored disks, "
        "as after a power cut at that moment"
        + (" (the guest's filesystems were frozen, so they are clean)" if _frozen(s) else "")
        + "."
    )
    facts = [
        f"Snapshot: {literal(s.label)} ({KIND_WORDS[s.kind]}, in the backup store)",
        f"Created: {when(s.created_at)} (VM was {s.captured_state.value})",
        f"Disks: {human_bytes(s.logical_bytes)}",
    ]
    if s.damage:
        facts.append(
            f"⚠️ Marked damaged by the last verification: {literal(s.damage)}. The restore "
            "stops at a damaged piece"
        )
    if preview.as_name is not None:
        return "\n".join(
            [
                f"This will define a new VM {literal(preview.as_name)} from "
                f"{literal(preview.vm_name)}'s snapshot, beside it.",
                f"{literal(preview.vm_name)} itself is not changed"
                + ("" if preview.vm is not None else " (it no longer exists)")
                + ".",
                "",
                *facts,
                "",
                f"{literal(preview.as_name)} gets a new UUID, new MAC addresses and its own copies "
                "of the disks. It is left shut off: a static IP address inside the guest would "
                f"clash with {literal(preview.vm_name)}'s; change it before starting both.",
                memory,
            ]
        )
    if preview.vm is None:
        return "\n".join(
            [
                f"{literal(preview.vm_name)} no longer exists. This will define it again from "
                "the backup store, under its own name and UUID, with its disks as they were.",
                "",
                *facts,
                "",
                memory,
                "It is started if it was running when the snapshot was taken.",
            ]
        )
    lines = [
        f"⚠️  Warning: This will restore {literal(preview.vm_name)}'s disks to snapshot state.",
        "Current data will be lost. This cannot be undone.",
        "",
        *facts,
        f"VM now: {preview.vm.state.value}",
        "",
        memory,
        "The VM's internal snapshots are kept.",
    ]
    if preview.newer:
        names = ", ".join(literal(n.label) for n in preview.newer)
        lines.append(f"Newer snapshots (kept): {names}")
    return "\n".join(lines)


def _frozen(s: Snapshot) -> bool:
    return s.consistency == Consistency.FROZEN.value


def backup_restored(result: BackupRestoreResult) -> str:
    """A restore from the backup store that completed."""
    s = result.snapshot
    took = f"in {human_seconds(result.seconds)} ({human_bytes(result.bytes_written)} written)"
    if result.created and result.vm_name != s.vm_name:
        return (
            f"New VM {literal(result.vm_name)} defined from `{literal(s.label)}` of "
            f"{literal(s.vm_name)} {took}. It has a new UUID and new MAC addresses, and is "
            f"{result.vm_state.value}: start it when its network settings cannot clash with "
            f"{literal(s.vm_name)}'s (a static IP inside the guest would). "
            f"{literal(s.vm_name)} was not changed."
        )
    if result.created:
        return (
            f"{literal(result.vm_name)} is defined again from `{literal(s.label)}` {took}, "
            f"under its own name and UUID. The VM is {result.vm_state.value}.\n"
            "Verify: that it boots, your data, and that services run."
        )
    safety = (
        f" Safety snapshot of the state before: `{literal(result.safety.label)}`."
        if result.safety
        else " No safety snapshot was taken."
    )
    return (
        f"{literal(result.vm_name)}'s disks restored to `{literal(s.label)}` {took}. The VM is "
        f"{result.vm_state.value} (it booted from its disks: no memory state).{safety} Its "
        "internal snapshots are kept.\n"
        "Verify: that it boots, your data, and that services run."
    )


def archive_prompt(snapshot: Snapshot) -> str:
    """Before ``/snapshot archive``: what moves, and what is lost (the memory state)."""
    memory = (
        f"Its memory state ({human_bytes(snapshot.memory_bytes)}) is not kept: restoring the "
        "archived snapshot boots the VM from its disks."
        if snapshot.has_memory
        else "It has no memory state, so nothing else is lost."
    )
    return (
        f"Archive snapshot `{literal(snapshot.label)}` of {literal(snapshot.vm_name)}? Taken "
        f"{when(snapshot.created_at)}, {snapshot.origin.value} by "
        f"{literal(snapshot.created_by)}. Its disk state is copied into the backup store, then "
        "the internal snapshot is deleted, freeing its space in the VM's image. " + memory
    )


def archived(result: ArchiveResult) -> str:
    s = result.snapshot
    freed = (
        f"{human_bytes(result.freed_bytes)} freed in the VM's image"
        if result.freed_bytes is not None
        else "the space it freed in the VM's image cannot be measured"
    )
    return (
        f"Archived `{literal(s.label)}` of {literal(s.vm_name)} in "
        f"{human_seconds(result.seconds)}: {transfer_text(result.figures)}; the internal "
        f"snapshot is deleted, {freed}. It is restorable from the backup store (disks only, "
        "no memory state)."
    )


def verify_report(result: VerifyResult) -> str:
    """``/snapshot verify``: what was re-read, what is damaged and what it affects."""
    report = result.report
    if not report.points_checked:
        return (
            "Nothing to verify: no restore points in the backup store here. Take one with "
            "/snapshot <vm> <name> --incremental."
        )
    checked = (
        f"Verified {len(report.points_checked)} restore point(s) in "
        f"{human_seconds(result.seconds)}: {report.chunks_checked} stored piece(s), "
        f"{human_bytes(report.bytes_checked)}, re-read and checked against their checksums."
    )
    lines = [checked]
    if report.ok and not result.damaged:
        lines.append("✅ Everything is intact.")
    else:
        bad = len(report.damaged_chunks) + len(report.missing_chunks)
        what = [f"{bad} piece(s) damaged or missing"] if bad else []
        if report.damaged_files:
            files = ", ".join(literal(f) for f in report.damaged_files[:5])
            more = (
                f" and {len(report.damaged_files) - 5} more"
                if len(report.damaged_files) > 5
                else ""
            )
            what.append(f"damaged files: {files}{more}")
        lines.append("⚠️ " + ("; ".join(what) or "damage found") + ".")
        if result.damaged:
            lines.append("Affected restore points (restoring them stops at the damage):")
            lines += [
                f"  {literal(s.vm_name)} `{literal(s.label)}` ({when(s.created_at)})"
                for s in result.damaged[:30]
            ]
            if len(result.damaged) > 30:
                lines.append(f"  … and {len(result.damaged) - 30} more (/snapshot list)")
        lines.append(
            "The next incremental snapshot of each affected VM stores a damaged piece again "
            "where the VM's disks still hold that data; older points stay damaged. Check the "
            "backup disk (SNAPBOT_BACKUP_DIR) for errors."
        )
    if result.repaired:
        names = ", ".join(
            f"{literal(s.vm_name)} `{literal(s.label)}`" for s in result.repaired[:10]
        )
        lines.append(f"Whole again (a later backup stored the missing pieces): {names}.")
    return "\n".join(lines)
