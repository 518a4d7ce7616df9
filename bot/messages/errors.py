"""What went wrong, in what state it left things, and what to do: one sentence per core error."""

from __future__ import annotations

from collections.abc import Sequence

from bot.messages.format import human_bytes, when
from bot.messages.hosts import vm_ambiguous
from bot.messages.usage import NAMING_ADVICE
from bot.mrkdwn import literal
from core.domain.backups import BackupDamaged, RestorePointNotFound
from core.domain.operation import Recovery
from core.errors import (
    ConfirmationSpent,
    CoreError,
    Forbidden,
    HoldForbidden,
    HostBusy,
    HypervisorBusy,
    HypervisorError,
    HypervisorTimeout,
    HypervisorUnavailable,
    InsufficientSpace,
    InvalidInput,
    InvalidLabel,
    LabelTaken,
    LibvirtJobRunning,
    RestoreFailed,
    ScheduleNotFound,
    SnapshotHeld,
    SnapshotMissing,
    SnapshotNotFound,
    SpaceUnknown,
    Unsupported,
    VmAmbiguous,
    VmBusy,
    VmNotFound,
)

_SPENT = {
    "used": "was already confirmed{by}; it runs once",
    "expired": "has expired; run the command again to see a fresh preview",
    "not_yours": "belongs to {who}, who asked for it; run the command yourself if you need it",
}


_RECOVERY = {
    Recovery.NOTHING_NEEDED.value: "It is running.",
    Recovery.LEFT_SHUT_OFF.value: "It was shut off before the restore and is left shut off.",
    Recovery.RESUMED.value: "snapbot resumed it.",
    Recovery.STARTED.value: "snapbot started it again from its current disk.",
    Recovery.BACK_TO_SAFETY.value: (
        "snapbot reverted it to the safety snapshot: it is as it was before the restore."
    ),
    Recovery.FAILED.value: "snapbot could not bring it back; check it with `virsh domstate`.",
    Recovery.UNKNOWN.value: (
        "The answer to the revert was lost and libvirt's evidence cannot tell whether it "
        "completed, so snapbot left the VM as it is: check `virsh snapshot-current` and the "
        "guest's data, or restore again."
    ),
}


def error_text(error: CoreError) -> str:
    """What went wrong, what state things are in, and what to do."""
    if isinstance(error, BackupDamaged):
        return (
            f"Stored data is damaged in the backup store ({literal(error.what)}: "
            f"{literal(error.reason)}), so this cannot complete. `/snapshot verify` lists the "
            "restore points affected; another restore point may be whole. The next incremental "
            "snapshot stores a damaged piece again where the VM still has that data."
        )
    if isinstance(error, RestorePointNotFound):
        return (
            f"The backup store has no restore point {literal(error.point_id)} any more (deleted "
            "or lost outside snapbot). Check that SNAPBOT_BACKUP_DIR is the store it was "
            "written to, and look at `/snapshot list`."
        )
    if isinstance(error, HoldForbidden):
        return (
            f"Only the snapshot's creator ({literal(error.creator)}) or an admin may "
            f"{error.verb} `{literal(error.label)}` of {literal(error.vm or '')}. "
            "Nothing was changed."
        )
    if isinstance(error, SnapshotHeld):
        return (
            f"`{literal(error.label)}` of {literal(error.vm)} is {error.hold} "
            f"({hold_placed_by(error)}), so it was not deleted. Release it first with "
            f"`/snapshot release {literal(error.vm)} {literal(error.label)}` (its creator or "
            "an admin), then delete it."
        )
    if isinstance(error, Forbidden):
        scope = f" for {literal(error.vm)}" if error.vm else ""
        return (
            f"You may not {error.action}{scope}: that needs the *{error.role}* role. "
            "Ask a snapbot admin to grant it (nothing was changed)."
        )
    if isinstance(error, ConfirmationSpent):
        by = f" by {literal(error.used_by)}" if error.used_by else ""
        who = literal(error.used_by) if error.used_by else "someone else"
        sentence = _SPENT[error.reason].format(by=by, who=who)
        if error.action == ConfirmationSpent.UNKNOWN:
            return f"This request {sentence}."
        return f"This {error.action} request {sentence}."
    if isinstance(error, VmNotFound):
        return f"No VM named `{literal(error.name)}`. " + _suggest("VM", error.suggestions)
    if isinstance(error, SnapshotMissing):
        return (
            f"Snapshot `{literal(error.label)}` of {literal(error.vm)} is recorded but libvirt "
            "no longer has it (it was deleted outside snapbot). It cannot be restored; "
            f"`/snapshot delete {literal(error.vm)} {literal(error.label)}` removes the record."
        )
    if isinstance(error, ScheduleNotFound):
        names = ", ".join(literal(n) for n in error.existing) or "none yet"
        return f"No schedule `{literal(error.key)}`. Schedules: {names}."
    if isinstance(error, SnapshotNotFound):
        deleted = ""
        if error.deleted_by and error.deleted_at:
            deleted = (
                f"It was deleted by {literal(error.deleted_by)} at {when(error.deleted_at)} "
                "(see the audit trail). "
            )
        return (
            f"{literal(error.vm)} has no snapshot `{literal(error.label)}`. {deleted}"
            + _suggest("snapshot", error.suggestions)
        )
    if isinstance(error, InvalidLabel):
        return (
            f"`{literal(error.label)}` cannot be a snapshot name: {literal(error.rule)}.\n"
            + NAMING_ADVICE
        )
    if isinstance(error, VmAmbiguous):
        return vm_ambiguous(error.name, error.candidates)
    if isinstance(error, InvalidInput):
        return literal(error)
    if isinstance(error, HostBusy):
        return (
            f"Host {literal(error.host)} is busy: it already runs {error.limit} snapbot "
            f"operation(s), its limit, and none ended within {error.waited_seconds:.0f} s. "
            f"Nothing was changed on {literal(error.vm)}; try again later."
        )
    if isinstance(error, VmBusy):
        h = error.holder
        return (
            f"{literal(error.vm)} is busy: {h.operation_kind} by {literal(h.requested_by)} since "
            f"{h.since.strftime('%H:%M')} UTC. Nothing was changed; try again when it finishes."
        )
    if isinstance(error, HypervisorBusy):
        return (
            f"libvirt is busy with {literal(error.vm)} (another tool is working on it: "
            f"{literal(error.detail)}). "
            "Nothing was changed; try again in a minute."
        )
    if isinstance(error, LabelTaken) and error.missing:
        return (
            f"{literal(error.vm)} has a record named `{literal(error.existing)}` whose snapshot is "
            "gone from libvirt (deleted outside snapbot). Clear the record with "
            f"`/snapshot delete {literal(error.vm)} {literal(error.existing)}`, or choose another "
            "name."
        )
    if isinstance(error, LabelTaken):
        vm = literal(error.vm)
        if error.existing != error.label:
            return (
                f"{vm} already has a snapshot named `{literal(error.existing)}`, which looks the "
                f"same as `{literal(error.label)}` (they differ only in case or in look-alike "
                "letters, e.g. Cyrillic е for Latin e). Choose a name that reads differently."
            )
        return f"{vm} already has a snapshot named `{literal(error.label)}`. Choose another name."
    if isinstance(error, Unsupported):
        return (
            f"Cannot do that for {literal(error.vm)}: {literal(error.reason)}.\n"
            f"Way out: {literal(error.way_out)}."
        )
    if isinstance(error, SpaceUnknown):
        places = "; ".join(f"{literal(w)} ({literal(why)})" for w, why in error.places)
        return (
            f"The free space for a snapshot of {literal(error.vm)} cannot be known: {places}. "
            "Nothing was changed. If you know there is room for the guest's RAM and its disks' "
            "growth, run the same command again with `--no-space-check`; a full disk pauses "
            "the guest mid-snapshot."
        )
    if isinstance(error, LibvirtJobRunning):
        return (
            f"libvirt is still running a job on {literal(error.vm)}, so its lock stays: "
            "unlocking now could start a second change while the first is still going. "
            f"Wait for it (`virsh domjobinfo {literal(error.vm)}`) or abort it "
            f"(`virsh domjobabort {literal(error.vm)}`), then unlock again."
        )
    if isinstance(error, HypervisorTimeout):
        return (
            f"libvirt did not answer in time{' on ' + literal(error.vm) if error.vm else ''}: "
            f"{literal(error.detail)}. What happened is being checked against libvirt; look at "
            "`/snapshot list` before retrying. An admin can see what holds the VM with "
            "`/snapshot unlock`."
        )
    if isinstance(error, InsufficientSpace):
        return (
            f"Not enough disk space on the host for a snapshot of {literal(error.vm)}: it needs "
            f"{human_bytes(error.needed)} in {literal(error.path)}, and "
            f"{human_bytes(error.available)} "
            "is free. Nothing was changed; the VM keeps running. Free space there, delete old "
            "snapshots (`/snapshot list`), or snapshot it shut off (needs far less)."
        )
    if isinstance(error, RestoreFailed):
        return (
            f"Restore of {literal(error.vm)} failed: {literal(error.detail)}.\n"
            f"The VM is now *{error.vm_state}*. {_RECOVERY.get(error.recovery, error.recovery)}\n"
            "Check it with `virsh domstate`, look at the libvirt log, and ask an administrator "
            "if it stays like this."
        )
    if isinstance(error, HypervisorUnavailable):
        return (
            "Lost contact with libvirt"
            + (f" while working on {literal(error.vm)}" if error.vm else "")
            + f": {literal(error.detail)}. Whether the change happened is checked when libvirt "
            "is back; look at `/snapshot list` before retrying."
        )
    if isinstance(error, HypervisorError):
        state = f" The VM is now *{error.vm_state}*." if error.vm_state else ""
        return (
            f"libvirt failed{' on ' + literal(error.vm) if error.vm else ''}: "
            f"{literal(error.detail)}.{state} "
            "Check free disk space on the host, make sure the VM is in a stable state, or try "
            "with the VM stopped."
        )
    return literal(error)


def _suggest(kind: str, suggestions: Sequence[str]) -> str:
    if not suggestions:
        return f"There are no {kind}s."
    return (
        f"Existing {kind}s, closest first: "
        + ", ".join(f"`{literal(s)}`" for s in suggestions)
        + "."
    )


def hold_placed_by(error: SnapshotHeld) -> str:
    if error.held_by:
        return f"hold placed by {literal(error.held_by)}"
    return "who placed the hold is not recorded"


def internal_error(reference: str) -> str:
    return f"Something went wrong inside snapbot (reference {reference}); it has been logged."
