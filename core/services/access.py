"""Access checks for front ends that serve many people (Slack), with every refusal audited.

The console does not use this: whoever can run it on the host can already use virsh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence

from core.domain.access import AccessPolicy, Action
from core.domain.hosts import HostHealth, split_vm_ref
from core.domain.operation import Actor, OperationKind
from core.domain.vm import Vm
from core.errors import CoreError, Forbidden, VmAmbiguous
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


# The names a VM's host is known by (its configured name and aliases), from the VM's name as
# typed (``web-01`` or ``hv1/web-01``); empty when it cannot be told. ``VmAmbiguous``
# propagates: the answer then depends on which of the candidates the person may see.
HostLookup = Callable[[str], Awaitable[frozenset[str]]]


def host_lookup(
    find: Callable[[str], Awaitable[Vm]], health: Callable[[], Sequence[HostHealth]]
) -> HostLookup:
    """Where a VM lives, for grants limited to hosts: the host typed before ``/``, else the one
    the VM is found on, with every configured name of that same hypervisor."""

    async def names(vm: str) -> frozenset[str]:
        hosts = health()
        primaries = [h.name for h in hosts if h.alias_of is None]
        host = split_vm_ref(vm).host
        if host is None and len(primaries) == 1:
            host = primaries[0]  # one hypervisor: every VM is there, nothing to look up
        if host is None:
            try:
                host = (await find(vm)).host
            except VmAmbiguous:
                raise
            except CoreError:
                return frozenset()  # not found, or its host is down: no host-limited grant
        if host is None:
            return frozenset()
        primary = next((h.alias_of for h in hosts if h.name == host and h.alias_of), host)
        return frozenset({primary, host} | {h.name for h in hosts if h.alias_of == primary})

    return names


class AccessService:
    """Deny by default; see ``core.domain.access`` for the roles. ``hosts`` tells a VM's host
    where a grant is limited to hosts (None: no VM has a known host, so such grants cover
    nothing)."""

    def __init__(
        self,
        policy: AccessPolicy,
        directory: Directory,
        runner: OperationRunner,
        hosts: HostLookup | None = None,
    ) -> None:
        self._policy = policy
        self._directory = directory
        self._runner = runner
        self._hosts = hosts
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
        try:
            hosts = await self._host_names(vm)
        except VmAmbiguous as ambiguous:
            # Which one is meant is the person's to say; only among those they may act on, so
            # a refusal names no VM they may not see.
            mine = [
                c
                for c in ambiguous.candidates
                if self._policy.allows(
                    actor.user,
                    groups,
                    action,
                    vm=c,
                    channel=actor.channel,
                    hosts=await self._host_names(c),
                )
            ]
            if mine:
                raise VmAmbiguous(ambiguous.name, mine) from None
            return False
        return self._policy.allows(
            actor.user, groups, action, vm=vm, channel=actor.channel, hosts=hosts
        )

    async def _host_names(self, vm: str | None) -> frozenset[str]:
        if vm is None or self._hosts is None or not self._policy.limits_hosts:
            return frozenset()
        return await self._hosts(vm)

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
        visible = []
        for name in vm_names:
            try:
                hosts = await self._host_names(name)
            except VmAmbiguous:
                continue  # listings name VMs as hv1/web-01 where names are shared
            if self._policy.visible(actor.user, groups, name, actor.channel, hosts):
                visible.append(name)
        return visible
