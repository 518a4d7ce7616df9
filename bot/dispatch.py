"""Run a parsed command against the services and turn the result into text.

Front ends differ in how they show progress and ask for confirmation; what a command *does* is
here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot import messages
from bot.grammar import (
    Command,
    CreateSnapshot,
    DeleteSnapshot,
    Help,
    ListSnapshots,
    ListVms,
    RenameSnapshot,
    Restore,
)
from core.domain.operation import Actor, ProgressCallback
from core.services.snapshots import SnapshotService

# Asked before a restore: shows the warning, returns what the user typed.
Confirm = Callable[[str], Awaitable[str]]


async def execute(
    command: Command,
    service: SnapshotService,
    actor: Actor,
    progress: ProgressCallback,
    confirm: Confirm,
) -> str:
    """Run ``command``; return the reply. ``CoreError`` propagates for the front end to render."""
    if isinstance(command, Help):
        return messages.help_text(command.command)
    if isinstance(command, ListVms):
        return messages.vms_table(await service.list_vms())
    if isinstance(command, ListSnapshots):
        return messages.snapshots_table(await service.list_snapshots(command.vm))
    if isinstance(command, CreateSnapshot):
        created = await service.create_snapshot(
            command.vm,
            command.label,
            actor=actor,
            description=command.description,
            progress=progress,
        )
        return messages.created(created)
    if isinstance(command, DeleteSnapshot):
        deleted = await service.delete_snapshot(
            command.vm, command.label, actor=actor, progress=progress
        )
        return messages.deleted(deleted)
    if isinstance(command, RenameSnapshot):
        renamed = await service.rename_snapshot(
            command.vm, command.old_label, command.new_label, actor=actor
        )
        return messages.renamed(renamed)
    assert isinstance(command, Restore)
    preview = await service.restore_preview(command.vm, command.label)
    typed = await confirm(messages.restore_warning(preview))
    if typed != preview.vm.name:
        return messages.restore_cancelled(preview.vm.name, typed)
    restored = await service.restore(
        command.vm,
        command.label,
        actor=actor,
        safety_snapshot=command.safety_snapshot,
        progress=progress,
    )
    return messages.restored(restored)
