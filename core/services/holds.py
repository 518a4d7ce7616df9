"""Holds: who may place or release one, and who placed one. One rule for every front end.

The rule is the one the before-change prompt's *Verified* button always had: the snapshot's
creator knows whether the change it guards is good, and an admin of its VM (who may delete it
anyway) may decide for them. Nobody else may take a snapshot out of retention's reach, or hand
it back to retention.
"""

from __future__ import annotations

from core.domain.access import Action
from core.domain.operation import Actor, OperationKind, OperationStatus
from core.domain.snapshot import HoldKind, Snapshot
from core.errors import HoldForbidden, SnapshotHeld
from core.ports import Authority, Catalogue


async def require_hold_right(
    snapshot: Snapshot,
    actor: Actor,
    authority: Authority | None,
    verb: str,
    vm: str | None = None,
) -> None:
    """Return if ``actor`` may ``verb`` (``hold``, ``release the hold on``) ``snapshot``;
    otherwise raise ``HoldForbidden``. ``authority`` None is the local operator (the console),
    who has every right, like virsh. ``vm`` names the VM with its host (``hv1/web-01``) where
    its name alone may be another host's."""
    if authority is None or snapshot.created_by == actor.user:
        return
    if await authority.allows(actor, Action.DELETE, vm or snapshot.vm_name):
        return
    raise HoldForbidden(
        actor.user, verb, snapshot.vm_name, snapshot.label, snapshot.created_by, actor.channel
    )


async def hold_placed_by(catalogue: Catalogue, snapshot: Snapshot) -> str | None:
    """Who placed the hold ``snapshot`` carries, from the audit trail; None when unrecorded."""
    for op in await catalogue.operations(snapshot.vm_uuid, limit=500):
        if (
            op.kind is OperationKind.HOLD
            and op.status is OperationStatus.SUCCEEDED
            and op.libvirt_name == snapshot.libvirt_name
        ):
            return op.requested_by
    if snapshot.hold is not None and snapshot.hold.kind is HoldKind.VERIFIED:
        # Held before holds were audited: `--hold` at creation, by its creator.
        return snapshot.created_by
    return None


async def refuse_if_held(catalogue: Catalogue, snapshot: Snapshot) -> None:
    """Raise ``SnapshotHeld`` (saying who holds it) when ``snapshot`` is held: nothing deletes a
    held snapshot."""
    if snapshot.held or snapshot.hold is not None:
        hold = snapshot.hold.describe() if snapshot.hold else "held"
        raise SnapshotHeld(
            snapshot.vm_name, snapshot.label, hold, await hold_placed_by(catalogue, snapshot)
        )
