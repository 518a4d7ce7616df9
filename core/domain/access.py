"""Who may do what: roles, grants and the deny-by-default decision.

Roles are ordered; each includes the ones below it, because someone trusted to restore a VM is
trusted to snapshot it first:

    admin      prune, delete, schedules, policies
    restorer   restore
    operator   take and rename snapshots
    viewer     list and look

A grant gives a role to Slack user ids and/or user groups, optionally limited to VM name
patterns (globs such as ``web-*``, or ``hv1/web-*`` naming the host too), to hypervisor hosts
(configured host names or globs such as ``hv*``) and to channel ids. Nobody has any role
without a grant.
The decision is pure: the Slack layer resolves user-group membership and passes it in.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from core.domain.hosts import SEPARATOR, qualified, split_vm_ref
from core.errors import InvalidInput


class Role(enum.IntEnum):
    """A role; a higher value includes every lower one."""

    VIEWER = 1
    OPERATOR = 2
    RESTORER = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(r.label for r in cls)
            raise InvalidInput(f"unknown role {text!r}; roles are {names}") from None


class Action(enum.Enum):
    """What a request does, and the role it needs."""

    VIEW = ("see VMs and snapshots", Role.VIEWER)
    SNAPSHOT = ("take snapshots", Role.OPERATOR)
    RENAME = ("rename snapshots", Role.OPERATOR)
    RESTORE = ("restore VMs", Role.RESTORER)
    DELETE = ("delete snapshots", Role.ADMIN)
    PRUNE = ("prune snapshots", Role.ADMIN)
    SCHEDULE = ("manage schedules", Role.ADMIN)
    UNLOCK = ("unlock VMs", Role.ADMIN)

    def __init__(self, description: str, role: Role) -> None:
        self.description = description
        self.role = role


@dataclass(frozen=True, slots=True)
class Grant:
    """``role`` for ``users`` and members of ``usergroups``; limited to ``vms`` patterns,
    ``hosts`` patterns and ``channels`` when those are not empty."""

    role: Role
    users: frozenset[str] = frozenset()
    usergroups: frozenset[str] = frozenset()
    vms: tuple[str, ...] = ()
    channels: frozenset[str] = frozenset()
    hosts: tuple[str, ...] = ()

    def applies_to(self, user: str, groups: Collection[str]) -> bool:
        return user in self.users or any(g in self.usergroups for g in groups)

    def covers(
        self, vm: str | None, channel: str | None, hosts: Collection[str] = frozenset()
    ) -> bool:
        """Does the grant's scope include this VM and channel? ``vm`` None means "all VMs"
        (a listing or ``/prune all``), which only an unlimited grant covers. ``vm`` may be
        ``hv1/web-01``; ``hosts`` are the names the VM's host is known by (its configured name
        and its aliases; empty: not known, which no host-limited grant covers)."""
        if self.vms and (vm is None or not any(_vm_matches(vm, p, hosts) for p in self.vms)):
            return False
        if self.hosts and (
            vm is None or not any(fnmatch.fnmatchcase(h, p) for h in hosts for p in self.hosts)
        ):
            return False
        return not self.channels or channel in self.channels


def _vm_matches(vm: str, pattern: str, hosts: Collection[str]) -> bool:
    """``web-*`` matches the VM's name on any host; ``hv1/web-*`` its name on that host (the
    host typed before the name, or one the VM's host is known by)."""
    ref = split_vm_ref(vm)
    if SEPARATOR not in pattern:
        return fnmatch.fnmatchcase(ref.name, pattern)
    names = {ref.host} if ref.host is not None else set(hosts)
    return any(fnmatch.fnmatchcase(qualified(h, ref.name), pattern) for h in names)


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """Every grant; ``role_for`` answers with the highest role that applies."""

    grants: tuple[Grant, ...]

    @property
    def limits_hosts(self) -> bool:
        """Whether any grant names hosts (only then is a VM's host worth looking up)."""
        return any(g.hosts for g in self.grants)

    @property
    def usergroups(self) -> frozenset[str]:
        """The user groups any grant names: the only ones worth resolving."""
        return frozenset(g for grant in self.grants for g in grant.usergroups)

    def role_for(
        self,
        user: str,
        groups: Collection[str],
        *,
        vm: str | None,
        channel: str | None,
        hosts: Collection[str] = frozenset(),
    ) -> Role | None:
        roles = [
            g.role
            for g in self.grants
            if g.applies_to(user, groups) and g.covers(vm, channel, hosts)
        ]
        return max(roles, default=None)

    def allows(
        self,
        user: str,
        groups: Collection[str],
        action: Action,
        *,
        vm: str | None,
        channel: str | None,
        hosts: Collection[str] = frozenset(),
    ) -> bool:
        role = self.role_for(user, groups, vm=vm, channel=channel, hosts=hosts)
        return role is not None and role >= action.role

    def visible(
        self,
        user: str,
        groups: Collection[str],
        vm: str,
        channel: str | None,
        hosts: Collection[str] = frozenset(),
    ) -> bool:
        """May the user see this VM at all (the App Home and listings show only those)?"""
        return self.allows(user, groups, Action.VIEW, vm=vm, channel=channel, hosts=hosts)


def parse_grants(raw: Iterable[Mapping[str, object]], admins: Iterable[str] = ()) -> AccessPolicy:
    """Grants from the configuration file's ``[[access.grants]]`` tables, plus ``admins``
    (``SNAPBOT_ADMINS``) as unlimited admin grants. Bad entries are refused with the entry's
    position, so a typo never silently grants or removes access."""

    def strings(entry: Mapping[str, object], key: str, n: int) -> list[str]:
        value = entry.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InvalidInput(f"access grant #{n}: {key} must be a list of strings")
        return [str(v) for v in value]

    grants: list[Grant] = []
    for n, entry in enumerate(raw, start=1):
        unknown = set(entry) - {"role", "users", "usergroups", "vms", "channels", "hosts"}
        if unknown:
            raise InvalidInput(f"access grant #{n}: unknown key(s) {', '.join(sorted(unknown))}")
        if "role" not in entry:
            raise InvalidInput(f"access grant #{n}: role is missing")
        users, groups = strings(entry, "users", n), strings(entry, "usergroups", n)
        if not users and not groups:
            raise InvalidInput(f"access grant #{n}: name at least one user or usergroup")
        grants.append(
            Grant(
                role=Role.parse(str(entry["role"])),
                users=frozenset(users),
                usergroups=frozenset(groups),
                vms=tuple(strings(entry, "vms", n)),
                channels=frozenset(strings(entry, "channels", n)),
                hosts=tuple(strings(entry, "hosts", n)),
            )
        )
    admin_ids = frozenset(a.strip() for a in admins if a.strip())
    if admin_ids:
        grants.append(Grant(role=Role.ADMIN, users=admin_ids))
    return AccessPolicy(tuple(grants))
