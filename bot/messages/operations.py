"""A running operation: its title, stages and progress, how it ended, what a crash interrupted,
and an admin ending a VM's lock."""

from __future__ import annotations

from collections.abc import Sequence

from bot.messages.format import human_seconds, mention, when
from bot.mrkdwn import literal
from core.domain.operation import Operation, Stage
from core.services.locks import LockPreview

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
    Stage.READING_DISKS: "Reading disks into the backup store (only new data is stored)",
    Stage.WRITING_DISKS: "Writing disks back from the backup store",
    Stage.DEFINING: "Defining the VM from its stored configuration",
}


def stage_text(stage: Stage) -> str:
    """The progress line for a stage."""
    return _STAGES[stage]


def operation_title(
    action: str, vm: str, label: str | None = None, *, by: str | None = None
) -> str:
    """The headline of a live progress message; ``by`` is the Slack user who asked for it."""
    what = f" `{literal(label)}`" if label else ""
    who = f" by {mention(by)}" if by is not None else ""
    return f"*{action}* {literal(vm)}{what}{who}"


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


def failed_text(title: str, error_text_: str) -> str:
    return f"❌ {title} failed\n{error_text_}"


def done_text(title: str, outcome: str) -> str:
    return f"✅ {title}\n{outcome}"


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
        f"{mention(op.requested_by)} your {op.kind.value} of {literal(op.vm_name)}"
        + (f" (`{literal(op.snapshot_label)}`)" if op.snapshot_label else "")
        + f", started {when(op.started_at)}, was interrupted when snapbot stopped. "
        f"Checked against libvirt since: {literal(op.outcome or 'no outcome recorded')}."
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
