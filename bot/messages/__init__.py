"""Every sentence snapbot shows a person, in one place, so the wording is consistent and tested.

Functions return plain text with light markdown (``*bold*``, backticks) that reads well both in
a terminal and in Slack. Every piece of text that comes from a person or from libvirt (names,
labels, descriptions, error details) goes in through ``literal``, so in Slack it never becomes a
mention, a link or formatting; the console shows messages through ``bot.mrkdwn.plain``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from bot.grammar import PRUNE, RESTORE, SNAPSHOT, UsageError
from bot.mrkdwn import literal
from core.config import SlackSettings
from core.domain.operation import Operation, Recovery, Stage
from core.domain.schedule import Schedule
from core.domain.snapshot import LABEL_MAX_LENGTH, CatalogueStatus, Snapshot
from core.domain.vm import FreeSpace
from core.errors import (
    ConfirmationSpent,
    CoreError,
    Forbidden,
    HoldForbidden,
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
    VmBusy,
    VmNotFound,
)
from core.services.locks import LockPreview
from core.services.pruning import PrunePreview, VmPruneResult
from core.services.reports import Digest, RunReport
from core.services.snapshots import (
    CreateResult,
    DeleteResult,
    RenameResult,
    RestorePreview,
    RestoreResult,
    VmSnapshots,
    VmSummary,
)

CONFIRM_PROMPT = "Type VM name to confirm: "

USAGE = {
    SNAPSHOT: (
        "Usage:\n"
        '  /snapshot <vm> <name> [--desc "text"]   take a snapshot (memory too if running)\n'
        "  /snapshot list [<vm>]                     list snapshots of one VM or of all\n"
        "  /snapshot vms                             list VMs and their state\n"
        "  /snapshot delete <vm> <name>              delete a snapshot\n"
        "  /snapshot rename <vm> <old> <new>         change a snapshot's name\n"
        "  /snapshot <vm> <name> --hold              keep it until you say the change is verified\n"
        "  /snapshot hold <vm> <name> [--until YYYY-MM-DD | --until-verified]\n"
        "  /snapshot release <vm> <name>             end a hold (retention may then prune it)\n"
        "  /snapshot <vm> <name> --no-space-check    go ahead where free space cannot be known\n"
        "  /snapshot unlock <vm>                     admins: see what holds a VM, end its lock\n"
        "  /snapshot schedule add <name> <vm|glob|all> <when> [--tz Zone] [--channel C]\n"
        "        [--keep-last N --keep-daily N --keep-weekly N --keep-monthly N ...]\n"
        "        [--include-manual] [--safety-keep-last N] [--safety-keep-days D]\n"
        "      when: daily HH:MM | weekly <mon..sun> HH:MM | monthly <1-28> HH:MM\n"
        "            | cron '<min> <hour> <day> <month> <weekday>'\n"
        "  /snapshot schedule list | remove <id|name> | run <id|name>\n"
        "  /snapshot help                            this text"
    ),
    RESTORE: (
        "Usage:\n"
        "  /restore <vm> <name> [--no-safety-snapshot]\n"
        "  /restore <vm>                             choose one of the VM's snapshots first\n"
        "  Replaces the VM's current state with the snapshot, after you type the VM's name.\n"
        "  A safety snapshot of the current state is taken first unless you turn it off."
    ),
    PRUNE: (
        "Usage:\n"
        "  /prune <vm|all> [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
        "         [--keep-weekly N] [--keep-monthly N] [--keep-yearly N] [--dry-run]\n"
        "         [--include-manual] [--safety-keep-last N] [--safety-keep-days D]\n"
        "  Shows which snapshots the policy keeps and deletes, and why; nothing is deleted\n"
        "  until you confirm. Held snapshots are kept; manual ones too unless you give\n"
        "  --include-manual; safety snapshots (taken before restores) keep the newest 3 and\n"
        "  any not older than 14 days unless set otherwise; a VM's last snapshot is never\n"
        "  deleted. Example: /prune web-01 --keep-last 3 --keep-daily 7 --keep-weekly 4"
    ),
}

NAMING_ADVICE = (
    f"Snapshot names: up to {LABEL_MAX_LENGTH} characters, no spaces, no '/', not starting "
    "with '.' or '-', not all digits. Say what and when: before-upgrade-2025-12-16, "
    "clean-install, pre-migration."
)

_STAGES = {
    Stage.CHECKING: "Checking the VM and free space",
    Stage.SAVING_MEMORY_AND_DISK: "Pausing VM · Saving memory · Capturing disk",
    Stage.CAPTURING_DISK: "Capturing disk",
    Stage.VERIFYING: "Resuming and verifying",
    Stage.SAFETY_SNAPSHOT: "Taking a safety snapshot of the current state",
    Stage.STOPPING: "Stopping VM",
    Stage.REPLACING_DISK: "Replacing disk",
    Stage.REPLACING_DISK_AND_MEMORY: "Replacing disk · Restoring memory",
    Stage.STARTING: "Starting VM",
    Stage.DELETING: "Deleting snapshot",
    Stage.RECOVERING: "Restore failed; bringing the VM back to a usable state",
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
}


def human_bytes(size: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> 'unknown'."""
    if size is None:
        return "unknown"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_seconds(seconds: float) -> str:
    """0.13 -> '0.1 s'; 75 -> '1 min 15 s'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes} min {secs} s"


def when(moment: datetime) -> str:
    """A timestamp as operators read it: UTC, to the second."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def stage_text(stage: Stage) -> str:
    """The progress line for a stage."""
    return _STAGES[stage]


def usage(command: str) -> str:
    """The usage text of a command."""
    return USAGE[command]


def help_text(command: str) -> str:
    """Help: usage plus naming advice."""
    return usage(command) + ("\n\n" + NAMING_ADVICE if command == SNAPSHOT else "")


def usage_error_text(error: UsageError) -> str:
    """A grammar error and the usage of its command."""
    if error.command is None:
        return (
            f"{literal(error.problem)}. Commands: /snapshot, /restore, /prune (try /snapshot help)."
        )
    return f"{literal(error.problem)}.\n{usage(error.command)}"


def _suggest(kind: str, suggestions: Sequence[str]) -> str:
    if not suggestions:
        return f"There are no {kind}s."
    return (
        f"Existing {kind}s, closest first: "
        + ", ".join(f"`{literal(s)}`" for s in suggestions)
        + "."
    )


# What a confirmation nobody has a record of is called (store and service raise it so).
UNKNOWN_REQUEST = "an unknown request"

_SPENT = {
    "used": "was already confirmed{by}; it runs once",
    "expired": "has expired; run the command again to see a fresh preview",
    "not_yours": "belongs to {who}, who asked for it; run the command yourself if you need it",
}


def error_text(error: CoreError) -> str:
    """What went wrong, what state things are in, and what to do."""
    if isinstance(error, HoldForbidden):
        return (
            f"Only the snapshot's creator ({literal(error.creator)}) or an admin may "
            f"{error.verb} `{literal(error.label)}` of {literal(error.vm or '')}. "
            "Nothing was changed."
        )
    if isinstance(error, SnapshotHeld):
        return (
            f"`{literal(error.label)}` of {literal(error.vm)} is {error.hold} "
            f"({_held_by(error)}), so it was not deleted. Release it first with "
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
        if error.action == UNKNOWN_REQUEST:
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
    if isinstance(error, InvalidInput):
        return literal(error)
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


def vms_table(vms: Sequence[VmSummary]) -> str:
    """``/snapshot vms``."""
    if not vms:
        return "No VMs on this host."
    lines = ["VMs:"]
    for s in vms:
        busy = (
            f"  busy: {s.busy.operation_kind} by {literal(s.busy.requested_by)}" if s.busy else ""
        )
        lines.append(
            f"  {literal(s.vm.name):<24} {s.vm.state.value:<9} {s.snapshot_count} snapshot(s){busy}"
        )
    return "\n".join(lines)


def _snapshot_line(s: Snapshot) -> str:
    what = "disk+memory" if s.has_memory else "disk"
    memory = f" · memory {human_bytes(s.memory_bytes)}" if s.has_memory else ""
    missing = " · MISSING from libvirt" if s.status is CatalogueStatus.MISSING else ""
    missing += f" · {s.hold.describe()}" if s.hold else ""
    desc = f"\n      {literal(s.description)}" if s.description else ""
    return (
        f"  {literal(s.label):<28} {when(s.created_at)} · {s.kind.value} {what} · VM was "
        f"{s.captured_state.value}{memory} · {s.origin.value} by {literal(s.created_by)}"
        f"{missing}{desc}"
    )


def snapshots_table(groups: Sequence[VmSnapshots]) -> str:
    """``/snapshot list``: newest first per VM, with the honest size story."""
    if not groups:
        return "No VMs on this host."
    out = []
    for g in groups:
        gone = " (VM no longer exists)" if g.vm is None else f" ({g.vm.state.value})"
        busy = (
            f" — busy: {g.busy.operation_kind} by {literal(g.busy.requested_by)}" if g.busy else ""
        )
        out.append(f"*{literal(g.vm_name)}*{gone}{busy}")
        if not g.snapshots:
            out.append("  no snapshots")
        for s in sorted(g.snapshots, key=lambda s: s.created_at, reverse=True):
            out.append(_snapshot_line(s))
        if g.vm is not None and g.snapshots:
            out.append(
                f"  disk images: {human_bytes(g.disk_bytes)} on the host, shared by the VM and "
                "all its snapshots (internal snapshots share unchanged blocks, so a single "
                "snapshot's disk share cannot be measured)"
            )
    return "\n".join(out)


def created(result: CreateResult) -> str:
    s = result.snapshot
    memory = f", memory {human_bytes(s.memory_bytes)}" if s.has_memory else ""
    return (
        f"Snapshot `{literal(s.label)}` of {literal(s.vm_name)} taken in "
        f"{human_seconds(result.seconds)} "
        f"({'disk + memory + configuration' if s.has_memory else 'disk + configuration'}"
        f"{memory}). The VM is {result.vm_state.value}. "
        f"Disk images now {human_bytes(result.disk_bytes)}."
    )


def restore_warning(preview: RestorePreview) -> str:
    """The confirmation text before a restore (the product guide's wording)."""
    s = preview.snapshot
    lines = [
        f"⚠️  Warning: This will restore {literal(preview.vm.name)} to snapshot state.",
        "Current data will be lost. This cannot be undone.",
        "",
        f"Snapshot: {literal(s.label)}",
        f"Created: {when(s.created_at)} (VM was {s.captured_state.value})",
        f"VM now: {preview.vm.state.value}",
    ]
    if preview.newer:
        names = ", ".join(literal(n.label) for n in preview.newer)
        lines.append(f"Newer snapshots (kept, but the VM leaves their timeline): {names}")
    return "\n".join(lines)


def typed_mismatch(action: str, expected: str, typed: str) -> str:
    shown = typed if typed else "nothing"
    return (
        f"{action} cancelled: you typed {literal(repr(shown))}, not {literal(repr(expected))}. "
        "Nothing was changed."
    )


def prune_confirm_prompt(expected: str) -> str:
    return f"Type {literal(expected)} to confirm the deletions: "


def prune_nothing_confirmed(*, dry_run: bool) -> str:
    if dry_run:
        return "Dry run: nothing was deleted. Run it again without --dry-run to prune."
    return "Nothing to prune."


def restore_cancelled(vm: str, typed: str) -> str:
    shown = typed if typed else "nothing"
    return (
        f"Restore cancelled: you typed {literal(repr(shown))}, not the VM name "
        f"{literal(repr(vm))}. Nothing was changed."
    )


def restored(result: RestoreResult) -> str:
    safety = (
        f" Safety snapshot of the state before: `{literal(result.safety.label)}`."
        if result.safety
        else " No safety snapshot was taken."
    )
    return (
        f"{literal(result.snapshot.vm_name)} restored to `{literal(result.snapshot.label)}` in "
        f"{human_seconds(result.seconds)}. The VM is {result.vm_state.value}.{safety}\n"
        "Verify: the VM's clock and uptime, your data, and that services run."
    )


def deleted(result: DeleteResult) -> str:
    s = result.snapshot
    if result.already_gone:
        return (
            f"`{literal(s.label)}` of {literal(s.vm_name)} was already gone from libvirt; its "
            "record is removed."
        )
    return (
        f"Deleted `{literal(s.label)}` of {literal(s.vm_name)} in {human_seconds(result.seconds)}; "
        f"{human_bytes(result.freed_bytes)} freed on the host. The VM is not affected."
    )


def renamed(result: RenameResult) -> str:
    return (
        f"Renamed `{literal(result.old_label)}` of {literal(result.vm_name)} to "
        f"`{literal(result.new_label)}`."
    )


def fallback_banner(reason: str, uri: str) -> str:
    """First line when no libvirt daemon could be reached."""
    return (
        f"snapbot: {reason}; using libvirt's built-in test hypervisor {uri} instead "
        "(demo VMs only, nothing real is touched)."
    )


def connected_banner(uri: str) -> str:
    return f"snapbot: connected to {uri}. Type /snapshot help."


def reconciled_text(operations: Sequence[Operation]) -> str:
    """What start-up reconciliation found."""
    lines = [f"Found {len(operations)} operation(s) interrupted by a crash:"]
    for op in operations:
        lines.append(
            f"  {op.kind.value} of {op.vm_name} by {op.requested_by} at "
            f"{when(op.started_at)}: {op.outcome}"
        )
    return "\n".join(lines)


def reconciled_notice(op: Operation) -> str:
    """To the requester of an operation that a crash (or a dead replica) interrupted."""
    return (
        f"<@{op.requested_by}> your {op.kind.value} of {literal(op.vm_name)}"
        + (f" (`{literal(op.snapshot_label)}`)" if op.snapshot_label else "")
        + f", started {when(op.started_at)}, was interrupted when snapbot stopped. "
        f"Checked against libvirt since: {literal(op.outcome or 'no outcome recorded')}."
    )


def internal_error(reference: str) -> str:
    return f"Something went wrong inside snapbot (reference {reference}); it has been logged."


# --- Slack: progress, confirmations, access -------------------------------------------------


def progress_text(
    title: str,
    done: Sequence[tuple[Stage, float]],
    current: tuple[Stage, float] | None,
    elapsed: float,
) -> str:
    """The live message of a running operation: finished stages with their times, then the
    stage in progress."""
    lines = [f"⏳ {title} — {human_seconds(elapsed)}"]
    lines += [f"✓ {stage_text(stage)} ({human_seconds(secs)})" for stage, secs in done]
    if current is not None:
        stage, secs = current
        lines.append(f"… {stage_text(stage)} ({human_seconds(secs)})")
    return "\n".join(lines)


def stage_summary(stages: Sequence[tuple[Stage, float]]) -> str:
    """The stages an operation went through, with their times, on one line."""
    return "Stages: " + " → ".join(f"{stage_text(s)} ({human_seconds(t)})" for s, t in stages)


def slow_operation(elapsed: float, stage: Stage | None) -> str:
    now = f" It is at: {stage_text(stage)}." if stage else ""
    return (
        f"Still running after {human_seconds(elapsed)}.{now} Large memory or busy disks make "
        "this slower; the VM's lock stays held until it ends. No need to retry."
    )


def _held_by(error: SnapshotHeld) -> str:
    if error.held_by:
        return f"hold placed by {literal(error.held_by)}"
    return "who placed the hold is not recorded"


def _held_during_prune(error: SnapshotHeld) -> str:
    return (
        f"    kept `{literal(error.label)}`: held after the plan was made ({error.hold}, "
        f"{_held_by(error)}); a hold wins over the prune"
    )


def prune_preview(preview: PrunePreview, *, dry_run: bool) -> str:
    """Every snapshot with keep or delete and the reason, per VM, and what deleting frees."""
    lines = [
        f"Prune preview ({preview.policy.describe()}; {preview.policy.describe_scope()}; "
        f"periods in {preview.timezone})"
        + (" — dry run, nothing will be deleted" if dry_run else "")
    ]
    if not preview.plans:
        lines.append("No snapshots to consider.")
    total = 0
    for plan in preview.plans:
        lines.append(f"*{literal(plan.vm.name)}*")
        for d in plan.decisions:
            mark = "keep  " if d.keep else "DELETE"
            lines.append(
                f"  {mark} {literal(d.snapshot.label):<28} {when(d.snapshot.created_at)}  "
                f"{literal(d.reason)}"
            )
        if plan.refused:
            lines.append(f"  Nothing will be deleted: {literal(plan.refused)}")
        elif plan.to_delete:
            total += plan.memory_bytes_freed
            lines.append(
                f"  {len(plan.to_delete)} to delete; frees at least "
                f"{human_bytes(plan.memory_bytes_freed)} of saved memory, plus disk blocks no "
                "other snapshot uses (measured when deleted)"
            )
        else:
            lines.append("  Nothing to delete.")
    count = sum(len(p.to_delete) for p in preview.plans)
    if count and not dry_run:
        lines.append(
            f"Confirm to delete {count} snapshot(s) (at least {human_bytes(total)} freed). "
            "Nothing is deleted before you confirm."
        )
    return "\n".join(lines)


def prune_result(results: Sequence[VmPruneResult]) -> str:
    if not results:
        return "Prune: nothing was deleted."
    lines = ["Prune finished:"]
    for r in results:
        if r.skipped:
            lines.append(f"  {literal(r.vm_name)}: skipped, {literal(r.skipped)}")
            continue
        lines.append(
            f"  {literal(r.vm_name)}: deleted {len(r.deleted)}, freed "
            f"{human_bytes(r.freed_bytes)}"
            + "".join(f"\n    - {literal(d.snapshot.label)}" for d in r.deleted)
        )
        if r.kept_since_preview:
            lines.append(
                f"    kept {len(r.kept_since_preview)} that changed since the preview "
                "(held or renamed, or the policy now keeps them)"
            )
        lines.extend(_held_during_prune(h) for h in r.held)
        for label, error in r.failed:
            lines.append(f"    could not delete {literal(label)}: {error_text(error)}")
    return "\n".join(lines)


def delete_prompt(snapshot: Snapshot) -> str:
    if snapshot.status is CatalogueStatus.MISSING:
        return (
            f"Clear the record of snapshot `{literal(snapshot.label)}` of "
            f"{literal(snapshot.vm_name)}? libvirt no longer has it (it was deleted outside "
            f"snapbot); it was taken {when(snapshot.created_at)} by "
            f"{literal(snapshot.created_by)}. Clearing frees its name; the audit trail keeps "
            "its history. The VM is not affected."
        )
    what = "disk + memory" if snapshot.has_memory else "disk"
    memory = f", memory {human_bytes(snapshot.memory_bytes)}" if snapshot.has_memory else ""
    return (
        f"Delete snapshot `{literal(snapshot.label)}` of {literal(snapshot.vm_name)}? Taken "
        f"{when(snapshot.created_at)} ({what}{memory}), {snapshot.origin.value} by "
        f"{literal(snapshot.created_by)}. It cannot be restored afterwards. The VM is not affected."
    )


def unlock_preview(preview: LockPreview) -> str:
    """What holds a VM, for an admin deciding whether to end the lock."""
    op = preview.operation
    job = {
        True: "libvirt *is running a job* on it now: unlocking will be refused until it ends",
        False: "libvirt runs no job on it",
        None: "libvirt's job on it cannot be read",
    }[preview.libvirt_job]
    stage = f", at stage {op.stage.value}" if op.stage else ""
    label = f" `{literal(op.snapshot_label)}`" if op.snapshot_label else ""
    return (
        f"{literal(preview.vm.name)} is locked by {op.kind.value}{label} of "
        f"{literal(op.requested_by)} (via {op.via}), started {when(op.started_at)}{stage}. "
        f"Held by process {literal(preview.owner or 'unknown')}, last heartbeat "
        f"{human_seconds(max(preview.heartbeat_age_seconds, 0))} ago; {job}.\n"
        "Unlocking checks libvirt for what that operation really did, records it with your "
        "name, and frees the VM. Only unlock when you know that process is gone or stuck."
    )


def unlock_confirm_prompt(vm: str) -> str:
    return f"Type {literal(vm)} to end its lock: "


def unlocked(op: Operation) -> str:
    return (
        f"🔓 Unlocked {literal(op.vm_name)}: the {op.kind.value} it held was recorded as "
        f"{op.status.value}: {literal(op.outcome or '')}."
    )


def pick_snapshot(vm: VmSnapshots) -> str:
    if not vm.snapshots:
        return (
            f"{literal(vm.vm_name)} has no snapshots to restore. "
            f"Take one with /snapshot {literal(vm.vm_name)} <name>."
        )
    newest = sorted(vm.snapshots, key=lambda s: s.created_at, reverse=True)
    return (
        f"Which snapshot of {literal(vm.vm_name)}? Newest first:\n"
        + "\n".join(_snapshot_line(s) for s in newest)
        + f"\nThen: /restore {literal(vm.vm_name)} <name>"
    )


def cancelled(action: str, vm: str | None) -> str:
    on = f" of {literal(vm)}" if vm else ""
    return f"{action.capitalize()}{on} cancelled. Nothing was changed."


def operation_title(action: str, vm: str, label: str | None = None) -> str:
    """The headline of a live progress message."""
    what = f" `{literal(label)}`" if label else ""
    return f"*{action}* {literal(vm)}{what}"


# Slack surfaces: modal and button wording (Slack limits titles and buttons to 24 characters).
RESTORE_MODAL_TITLE = "Restore VM"
RESTORE_MODAL_SUBMIT = "Restore"
PICK_MODAL_TITLE = "Choose a snapshot"
PICK_MODAL_SUBMIT = "Next"
PICK_LABEL = "Snapshot to restore"
MODAL_CLOSE = "Cancel"
LOADING_TITLE = "snapbot"
LOADING_TEXT = "Looking up the VM and its snapshots…"
SAFETY_CHECKBOX = "Take a safety snapshot of the current state first"
SAFETY_HINT = "Lets you undo this restore by restoring the safety snapshot."
CONFIRM_LABEL = "Type VM name to confirm"
CONFIRM_BUTTON = "Confirm"
CANCEL_BUTTON = "Cancel"
HOME_TITLE = "snapbot"


def typed_name_error(vm: str) -> str:
    """Shown under the confirmation input when the typed name is not the VM's."""
    return f"Type the VM name exactly as shown: {vm}"


def confirmed_by(user: str, action: str) -> str:
    return f"{action.capitalize()} confirmed by <@{user}>; progress is posted in the channel."


def failed_text(title: str, error_text_: str) -> str:
    return f"❌ {title} failed\n{error_text_}"


def done_text(title: str, outcome: str) -> str:
    return f"✅ {title}\n{outcome}"


def modal_refusal(text: str) -> str:
    return f"Cannot restore: {text}"


def home_header(vm_count: int, snapshot_count: int, disk_bytes: int, memory_bytes: int) -> str:
    return (
        f"{vm_count} VM(s) you may act on · {snapshot_count} snapshot(s) · disk images "
        f"{human_bytes(disk_bytes)} · saved memory {human_bytes(memory_bytes)}"
    )


def home_vm(group: VmSnapshots) -> str:
    state = group.vm.state.value if group.vm else "no longer exists"
    busy = (
        f" · busy: {group.busy.operation_kind} by {literal(group.busy.requested_by)}"
        if group.busy
        else ""
    )
    lines = [f"*{literal(group.vm_name)}* ({state}){busy}"]
    newest = sorted(group.snapshots, key=lambda s: s.created_at, reverse=True)
    for s in newest[:10]:
        kind = "disk+memory" if s.has_memory else "disk"
        hold = " · held" if s.held else ""
        size = f" · {human_bytes(s.memory_bytes)} memory" if s.has_memory else ""
        missing = " · MISSING" if s.status is CatalogueStatus.MISSING else ""
        lines.append(f"• `{literal(s.label)}` {when(s.created_at)} · {kind}{size}{hold}{missing}")
    if len(newest) > 10:
        lines.append(f"… and {len(newest) - 10} older (/snapshot list {literal(group.vm_name)})")
    if not newest:
        lines.append("no snapshots")
    return "\n".join(lines)


def modal_failed(error: str) -> str:
    return (
        f"Could not open the confirmation dialog ({error}). Slack gives 3 seconds to open it; "
        "run the command again."
    )


def restore_request_unknown() -> str:
    return "This restore request is no longer known; close this and run /restore again."


def home_nothing_visible() -> str:
    return (
        "You have no role on any VM yet. Ask a snapbot admin to grant you one "
        "(viewer, operator, restorer or admin)."
    )


def slack_banner(uri: str, settings: SlackSettings) -> str:
    modes = []
    if settings.signing_secret is not None:
        modes.append(f"HTTP on port {settings.port}")
    if settings.app_token is not None:
        modes.append("Socket Mode")
    names = ", ".join(settings.commands.values())
    return f"snapbot: connected to {uri}; Slack via {' and '.join(modes)}; commands {names}."


# --- schedules, holds, reports ---------------------------------------------------------------


def held(snapshot: Snapshot) -> str:
    hold = snapshot.hold.describe() if snapshot.hold else "held"
    return (
        f"`{literal(snapshot.label)}` of {literal(snapshot.vm_name)} is now {hold}: retention "
        f"will not delete it. End it with /snapshot release {literal(snapshot.vm_name)} "
        f"{literal(snapshot.label)}."
    )


def not_held_after_create(snapshot: Snapshot, error: CoreError) -> str:
    """``--hold``: the snapshot exists, but holding it failed (someone else got the VM first)."""
    return (
        f"The snapshot was taken, but it is *not held*: {error_text(error)}\n"
        f"Hold it with /snapshot hold {literal(snapshot.vm_name)} {literal(snapshot.label)} "
        "--until-verified"
    )


def released(snapshot: Snapshot) -> str:
    return (
        f"`{literal(snapshot.label)}` of {literal(snapshot.vm_name)} is no longer held; "
        "retention rules apply "
        "to it again."
    )


def hold_reminder(snapshot: Snapshot) -> str:
    return (
        f"Reminder: `{literal(snapshot.label)}` of {literal(snapshot.vm_name)} "
        f"(taken {when(snapshot.created_at)}) "
        "is held until you verify the change it guards. Is the change good? *Verified* ends "
        "the hold; *Restore* goes back to the snapshot."
    )


def verified(snapshot: Snapshot, user: str) -> str:
    return (
        f"<@{user}> verified the change: `{literal(snapshot.label)}` of "
        f"{literal(snapshot.vm_name)} is released."
    )


def schedule_line(s: Schedule) -> str:
    policy = s.policy.describe() if s.policy else "no pruning"
    if s.policy and s.policy.include_manual:
        policy += ", manual snapshots included"
    if s.policy and s.policy.safety_keep_last is not None:
        policy += f", safety-keep-last={s.policy.safety_keep_last}"
    if s.policy and s.policy.safety_keep_days is not None:
        policy += f", safety-keep-days={s.policy.safety_keep_days}"
    where = f"<#{literal(s.channel)}>" if s.channel else "no channel"
    last = f", last slot {when(s.last_fire)}" if s.last_fire else ""
    return (
        f"  #{s.id} {literal(s.name)}: {literal(s.vms)} {literal(s.when.describe())}; "
        f"keep {policy}; reports to {where}; owner {literal(s.owner)}{last}"
    )


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
    mention = f" <@{s.owner}>" if report.failed or report.stale else ""
    if report.fire_time is None:
        return (
            f"*Schedule {literal(s.name)}*: {_missed_text(report)} It ran no catch-up: the "
            f"newest slot is older than the {human_seconds(s.grace.total_seconds())} grace "
            f"window.{mention}"
        )
    kind = "catch-up run" if report.catch_up else "run"
    icon = "❌" if report.failed else "✅"
    lines = [
        f"{icon} *Schedule {literal(s.name)}* {kind} for {when(report.fire_time)} finished in "
        f"{human_seconds(report.seconds)}{mention}"
    ]
    if report.missed:
        lines.append(_missed_text(report))
    if report.no_vms:
        lines.append(f"No VM matches `{literal(s.vms)}`.")
    for o in report.outcomes:
        if o.skipped and o.error is not None:
            lines.append(f"• {literal(o.vm)}: skipped — {error_text(o.error)}")
            continue
        if o.error is not None:
            state = f" The VM is {literal(o.vm_state)}." if o.vm_state else ""
            lines.append(f"• {literal(o.vm)}: FAILED — {error_text(o.error)}{state}")
            continue
        memory = f", memory {human_bytes(o.memory_bytes)}" if o.memory_bytes else ""
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
            lines.extend(_held_during_prune(h) for h in o.prune.held)
        if o.prune_error is not None:
            lines.append(f"    prune failed: {error_text(o.prune_error)}")
    lines.append(_storage(report.disk_bytes, report.free))
    for f in report.stale:
        level = "CRITICAL" if f.critical else "warning"
        age = "has no snapshot" if f.age is None else f"newest snapshot is {_age(f.age)} old"
        lines.append(
            f"{level}: {literal(f.vm)} {age} (this schedule promises {literal(s.when.describe())})."
        )
    return "\n".join(lines)


def _storage(disk_bytes: int, free: FreeSpace | None) -> str:
    where = f"; {human_bytes(free.available_bytes)} free in {literal(free.path)}" if free else ""
    return f"Storage: disk images {human_bytes(disk_bytes)}{where}."


def _age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} h"


VERIFIED_BUTTON = "Verified"
RESTORE_BUTTON = "Restore"


def verify_prompt(snapshot: Snapshot) -> str:
    return (
        f"`{literal(snapshot.label)}` of {literal(snapshot.vm_name)} is held until you verify "
        "the change it "
        "guards. When the change is good, press *Verified* (the hold ends and retention may "
        "prune it later); if it went wrong, *Restore* goes back to it. You will be reminded "
        "every 24 h until then."
    )


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
    for schedule, status in digest.schedules:
        lines.append(f"Schedule {literal(schedule.name)}: last run {status or 'not yet'}")
    total = sum(line.disk_bytes or 0 for line in digest.lines)
    lines.append(_storage(total, digest.free))
    return "\n".join(lines)
