"""Access checks for front ends that serve many people (Slack), with every refusal audited.

The console does not use this: whoever can run it on the host can already use virsh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

from core.domain.access import AccessPolicy, Action
from core.domain.operation import Actor, OperationKind
from core.errors import CoreError, Forbidden
from core.ports import Directory
from core.services.operations import OperationRunner

logger = logging.getLogger(__name__)

# Group membership changes rarely; Slack's usergroups.users.list is Tier 2 (20 a minute).
GROUP_CACHE_SECONDS = 300.0

# Every refusal is audited, looks and schedule changes included.
_AUDITED_AS = {
    Action.VIEW: OperationKind.VIEW,
    Action.SNAPSHOT: OperationKind.SNAPSHOT,
    Action.RENAME: OperationKind.RENAME,
    Action.RESTORE: OperationKind.RESTORE,
    Action.DELETE: OperationKind.DELETE,
    Action.PRUNE: OperationKind.PRUNE,
    Action.SCHEDULE: OperationKind.SCHEDULE,
    Action.UNLOCK: OperationKind.UNLOCK,
}


class AccessService:
    """Deny by default; see ``core.domain.access`` for the roles."""

    def __init__(self, policy: AccessPolicy, directory: Directory, runner: OperationRunner) -> None:
        self._policy = policy
        self._directory = directory
        self._runner = runner
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}

    def forget_groups(self) -> None:
        """Drop cached memberships (Slack said a group changed)."""
        self._groups.clear()

    async def groups_of(self, user: str) -> frozenset[str]:
        """The policy's user groups that ``user`` belongs to. A group that cannot be read
        grants nothing (deny by default) and is logged."""
        found = set()
        now = time.monotonic()
        for group in self._policy.usergroups:
            cached = self._groups.get(group)
            if cached is None or now - cached[0] > GROUP_CACHE_SECONDS:
                try:
                    members = frozenset(await self._directory.members(group))
                except CoreError as exc:
                    logger.warning("cannot read user group %s: %s", group, exc)
                    continue
                cached = (now, members)
                self._groups[group] = cached
            if user in cached[1]:
                found.add(group)
        return frozenset(found)

    async def require(self, actor: Actor, action: Action, vm: str | None) -> None:
        """Return if ``actor`` may do ``action`` on ``vm`` (None: all VMs) in its channel;
        otherwise audit the refusal and raise ``Forbidden``."""
        if await self.allows(actor, action, vm):
            return
        error = Forbidden(actor.user, action.description, action.role.label, vm, actor.channel)
        await self._runner.reject(_AUDITED_AS[action], actor, vm or "all", error)
        logger.info("refused %s to %s on %s in %s", action.name, actor.user, vm, actor.channel)
        raise error

    async def allows(self, actor: Actor, action: Action, vm: str | None) -> bool:
        """Whether ``actor`` may do ``action`` on ``vm`` in its channel. Not audited: the caller
        records what it refuses."""
        if not await self._from_home(actor):
            return False
        groups = await self.groups_of(actor.user)
        return self._policy.allows(actor.user, groups, action, vm=vm, channel=actor.channel)

    async def _from_home(self, actor: Actor) -> bool:
        """Grants name user ids of the installing workspace: the same id arriving from another
        workspace, or a Slack Connect user of another organisation, is someone else."""
        if actor.team is None and actor.enterprise is None:
            return True  # a front end that has no workspaces
        try:
            team, enterprise = await self._directory.home()
        except CoreError as exc:
            logger.warning("cannot tell which workspace snapbot is installed in: %s", exc)
            return False
        return (team is None or actor.team == team) and actor.enterprise == enterprise

    async def visible(self, actor: Actor, vm_names: Collection[str]) -> list[str]:
        """The VMs among ``vm_names`` that ``actor`` may see."""
        if not await self._from_home(actor):
            return []
        groups = await self.groups_of(actor.user)
        return [
            name
            for name in vm_names
            if self._policy.visible(actor.user, groups, name, actor.channel)
        ]
