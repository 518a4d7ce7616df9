"""Create and claim confirmations (see ``core.domain.confirmation``)."""

from __future__ import annotations

from core.domain.confirmation import (
    Confirmation,
    Request,
    is_confirmation_id,
    new_confirmation,
)
from core.domain.operation import Actor
from core.errors import ConfirmationSpent
from core.ports import Catalogue, Clock


class ConfirmationService:
    def __init__(self, catalogue: Catalogue, clock: Clock) -> None:
        self._catalogue = catalogue
        self._clock = clock

    async def create(self, request: Request, actor: Actor) -> Confirmation:
        """Store ``request`` until ``actor`` confirms it (or it expires)."""
        confirmation = new_confirmation(
            request, actor.user, self._clock.now(), team=actor.team, channel=actor.channel
        )
        await self._catalogue.add_confirmation(confirmation)
        return confirmation

    async def claim(self, confirmation_id: str, actor: Actor) -> Confirmation:
        """Use the confirmation, once; ``ConfirmationSpent`` otherwise."""
        if not is_confirmation_id(confirmation_id):
            raise ConfirmationSpent.unknown()
        return await self._catalogue.claim_confirmation(confirmation_id, actor.user)

    async def get(self, confirmation_id: str) -> Confirmation | None:
        if not is_confirmation_id(confirmation_id):
            return None
        return await self._catalogue.get_confirmation(confirmation_id)
