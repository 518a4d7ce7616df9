"""Snapshots and VMs: the listings, the restore picker, the prompts before a delete or a restore,
and what a create, restore, delete or rename did."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from bot.messages.backups import KIND_WORDS, restore_store_warning, store_line, store_summary
from bot.messages.format import human_bytes, human_seconds, when
from bot.messages.hosts import host_heading, host_unreachable, listed_hosts
from bot.messages.storage import reclaim_line
from bot.mrkdwn import literal
from bot.previews import StoreRestorePreview
from core.domain.hosts import HostHealth
from core.domain.snapshot import CatalogueStatus, Snapshot
from core.domain.usage import ReclaimEstimate
from core.services.snapshots import (
    CreateResult,
    DeleteResult,
    RenameResult,
    RestorePreview,
    RestoreResult,
    VmSnapshots,
    VmSummary,
)


def vms_table(vms: Sequence[VmSummary], hosts: Sequence[HostHealth] = ()) -> str:
    """``/snapshot vms``; grouped by host where ``hosts`` are several, naming those down."""
    listed = listed_hosts(hosts)
    if listed:
        return _by_host(
            listed,
            vms,
            lambda s: s.vm.host,
            lambda some: "\n".join(_vm_line(s) for s in some) or "  no VMs",
        )
    if not vms:
        return "No VMs on this host."
    return "\n".join(["VMs:", *(_vm_line(s) for s in vms)])


def _vm_line(s: VmSummary) -> str:
    busy = f"  busy: {s.busy.operation_kind} by {literal(s.busy.requested_by)}" if s.busy else ""
    return f"  {literal(s.vm.name):<24} {s.vm.state.value:<9} {s.snapshot_count} snapshot(s){busy}"


T = TypeVar("T")


def _by_host(
    hosts: Sequence[HostHealth],
    items: Sequence[T],
    host_of: Callable[[T], str | None],
    render: Callable[[Sequence[T]], str],
) -> str:
    """A listing per host, in configured order: each reachable host's heading and its items, a
    line for each host that does not answer, then items of no host (if any)."""
    out = []
    names = {h.name for h in hosts}
    for host in hosts:
        mine = [i for i in items if host_of(i) == host.name]
        if not host.reachable and not mine:
            out.append(host_unreachable(host))
            continue
        out.append(host_heading(host, len(mine)) if host.reachable else host_unreachable(host))
        out.append(render(mine))
    rest = [i for i in items if host_of(i) not in names]
    if rest:
        out.append(render(rest))
    return "\n".join(out)


def _snapshot_line(s: Snapshot) -> str:
    desc = f"\n      {literal(s.description)}" if s.description else ""
    hold = f" · {s.hold.describe()}" if s.hold else ""
    if s.kind.in_backup_store:
        # Disks and configuration outside the image, no memory: sizes are the store's.
        return (
            f"  {literal(s.label):<28} {when(s.created_at)} · {KIND_WORDS[s.kind]} disk · VM was "
            f"{s.captured_state.value} · {store_line(s)} · {s.origin.value} by "
            f"{literal(s.created_by)}{hold}{desc}"
        )
    what = "disk+memory" if s.has_memory else "disk"
    memory = f" · memory {human_bytes(s.memory_bytes)}" if s.has_memory else ""
    missing = " · MISSING from libvirt" if s.status is CatalogueStatus.MISSING else ""
    return (
        f"  {literal(s.label):<28} {when(s.created_at)} · {KIND_WORDS[s.kind]} {what} · VM was "
        f"{s.captured_state.value}{memory} · {s.origin.value} by {literal(s.created_by)}"
        f"{missing}{hold}{desc}"
    )


def snapshots_table(groups: Sequence[VmSnapshots], hosts: Sequence[HostHealth] = ()) -> str:
    """``/snapshot list``: newest first per VM, with the honest size story; grouped by host
    where ``hosts`` are several, naming those down (records of a VM on a host that does not
    answer are listed under it, not as gone)."""
    listed = listed_hosts(hosts)
    if listed:
        return _by_host(
            listed,
            groups,
            lambda g: _group_host(g, listed),
            lambda some: _groups_text(some, listed),
        )
    if not groups:
        return "No VMs on this host."
    return _groups_text(groups, ())


def _group_host(group: VmSnapshots, hosts: Sequence[HostHealth]) -> str | None:
    """The host a group is listed under: its VM's, else the host its records were taken on."""
    if group.vm is not None:
        return group.vm.host
    recorded = {s.host_uuid for s in group.snapshots if s.host_uuid}
    return next(
        (h.name for h in hosts if h.host_uuid is not None and h.host_uuid in recorded), None
    )


def _groups_text(groups: Sequence[VmSnapshots], hosts: Sequence[HostHealth]) -> str:
    down = {h.name for h in hosts if not h.reachable}
    out = []
    for g in groups:
        gone = " (VM no longer exists)" if g.vm is None else f" ({g.vm.state.value})"
        if g.vm is None and _group_host(g, hosts) in down:
            gone = " (its host does not answer: state unknown)"
        busy = (
            f" — busy: {g.busy.operation_kind} by {literal(g.busy.requested_by)}" if g.busy else ""
        )
        out.append(f"*{literal(g.vm_name)}*{gone}{busy}")
        if not g.snapshots:
            out.append("  no snapshots")
        for s in sorted(g.snapshots, key=lambda s: s.created_at, reverse=True):
            out.append(_snapshot_line(s))
        if g.vm is not None and any(not s.kind.in_backup_store for s in g.snapshots):
            out.append(
                f"  disk images: {human_bytes(g.disk_bytes)} on the host, shared by the VM and "
                "all its snapshots (internal snapshots share unchanged blocks, so a single "
                "snapshot's disk share cannot be measured)"
            )
        stored = store_summary(g.snapshots)
        if stored is not None:
            out.append(f"  {stored}")
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


def restore_warning(preview: RestorePreview | StoreRestorePreview) -> str:
    """The confirmation text before a restore (the product guide's wording)."""
    if isinstance(preview, StoreRestorePreview):
        return restore_store_warning(preview)
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
    if s.kind.in_backup_store:
        return (
            f"Deleted {KIND_WORDS[s.kind]} snapshot `{literal(s.label)}` of {literal(s.vm_name)} "
            f"in {human_seconds(result.seconds)}. Every other restore point stays complete; the "
            "space of pieces no other point shares comes back at the backup store's next "
            "garbage collection. The VM is not affected."
        )
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


def delete_prompt(snapshot: Snapshot, reclaim: ReclaimEstimate | None = None) -> str:
    """The question before a delete; with ``reclaim``, what it gives back."""
    question = _delete_question(snapshot)
    if reclaim is None or snapshot.status is CatalogueStatus.MISSING:
        return question
    return f"{question}\n{reclaim_line(reclaim)}"


def _delete_question(snapshot: Snapshot) -> str:
    if snapshot.kind.in_backup_store:
        return (
            f"Delete {KIND_WORDS[snapshot.kind]} snapshot `{literal(snapshot.label)}` of "
            f"{literal(snapshot.vm_name)} from the backup store? Taken "
            f"{when(snapshot.created_at)} (disks {human_bytes(snapshot.logical_bytes)}, added "
            f"{human_bytes(snapshot.added_bytes)}), {snapshot.origin.value} by "
            f"{literal(snapshot.created_by)}. It cannot be restored afterwards; every other "
            "restore point stays complete. The VM is not affected."
        )
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


def pick_snapshot(vm: VmSnapshots, as_name: str | None = None) -> str:
    if not vm.snapshots and vm.vm is None:
        return (
            f"{literal(vm.vm_name)} no longer exists and has no restore points in the backup store."
        )
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
        + (f" --as {literal(as_name)}" if as_name else "")
    )
