"""``ConfirmationStore`` on tortoise: each confirmation is claimed by one conditional update."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from core.catalogue.models import ConfirmationRow
from core.domain.confirmation import (
    Confirmation,
    ConfirmationKind,
    request_from_json,
    request_to_json,
)
from core.errors import ConfirmationSpent
from core.ports import Clock


def _confirmation(row: ConfirmationRow) -> Confirmation:
    return Confirmation(
        id=row.id,
        kind=ConfirmationKind(row.kind),
        requested_by=row.requested_by,
        created_at=row.created_at,
        expires_at=row.expires_at,
        request=request_from_json(ConfirmationKind(row.kind), dict(row.payload or {})),
        vm_name=row.vm_name,
        team=row.team,
        channel=row.channel,
        used_at=row.used_at,
        used_by=row.used_by,
    )


def refuse_unclaimable(confirmation: Confirmation | None, user: str, now: datetime) -> Confirmation:
    """Return the confirmation if ``user`` may claim it at ``now``; otherwise raise
    ``ConfirmationSpent`` saying why (unknown and expired alike read "expired")."""
    if confirmation is None:
        raise ConfirmationSpent.unknown()
    action = confirmation.kind.value
    if confirmation.used_at is not None:
        raise ConfirmationSpent(action, "used", confirmation.used_by)
    if confirmation.requested_by != user:
        raise ConfirmationSpent(action, "not_yours", confirmation.requested_by)
    if confirmation.expires_at < now:
        raise ConfirmationSpent(action, "expired")
    return confirmation


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
            payload=request_to_json(c.request),
            created_at=c.created_at,
            expires_at=c.expires_at,
        )

    async def claim_confirmation(self, confirmation_id: str, user: str) -> Confirmation:
        row = await ConfirmationRow.get_or_none(id=confirmation_id)
        now = self._clock.now()
        pending = refuse_unclaimable(None if row is None else _confirmation(row), user, now)
        # The conditional update is the claim: of two concurrent confirms, one updates a row.
        claimed = await ConfirmationRow.filter(id=confirmation_id, used_at__isnull=True).update(
            used_at=now, used_by=user
        )
        if claimed != 1:
            fresh = await ConfirmationRow.get(id=confirmation_id)
            raise ConfirmationSpent(pending.kind.value, "used", fresh.used_by)
        return replace(pending, used_at=now, used_by=user)

    async def get_confirmation(self, confirmation_id: str) -> Confirmation | None:
        row = await ConfirmationRow.get_or_none(id=confirmation_id)
        return None if row is None else _confirmation(row)
