"""``ConfirmationStore`` on tortoise: each confirmation is claimed by one conditional update."""

from __future__ import annotations

from core.catalogue.models import ConfirmationRow
from core.domain.confirmation import Confirmation, ConfirmationKind
from core.errors import ConfirmationSpent
from core.ports import Clock


def _confirmation(row: ConfirmationRow) -> Confirmation:
    return Confirmation(
        id=row.id,
        kind=ConfirmationKind(row.kind),
        requested_by=row.requested_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        payload=dict(row.payload or {}),
        vm_name=row.vm_name,
        team=row.team,
        channel=row.channel,
        used_at=row.used_at,
        used_by=row.used_by,
    )


class TortoiseConfirmations:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def add_confirmation(self, confirmation: Confirmation) -> None:
        c = confirmation
        await ConfirmationRow.create(
            id=c.id,
            kind=c.kind.value,
            requested_by=c.requested_by,
            team=c.team,
            channel=c.channel,
            vm_name=c.vm_name,
            payload=c.payload,
            created_at=c.created_at,
            expires_at=c.expires_at,
        )

    async def claim_confirmation(self, confirmation_id: str, user: str) -> Confirmation:
        row = await ConfirmationRow.get_or_none(id=confirmation_id)
        if row is None:
            raise ConfirmationSpent("an unknown request", "expired")
        action = row.kind
        if row.used_at is not None:
            raise ConfirmationSpent(action, "used", row.used_by)
        if row.requested_by != user:
            raise ConfirmationSpent(action, "not_yours", row.requested_by)
        now = self._clock.now()
        if row.expires_at < now:
            raise ConfirmationSpent(action, "expired")
        # The conditional update is the claim: of two concurrent confirms, one updates a row.
        claimed = await ConfirmationRow.filter(id=confirmation_id, used_at__isnull=True).update(
            used_at=now, used_by=user
        )
        if claimed != 1:
            fresh = await ConfirmationRow.get(id=confirmation_id)
            raise ConfirmationSpent(action, "used", fresh.used_by)
        row.used_at, row.used_by = now, user
        return _confirmation(row)

    async def get_confirmation(self, confirmation_id: str) -> Confirmation | None:
        row = await ConfirmationRow.get_or_none(id=confirmation_id)
        return None if row is None else _confirmation(row)
