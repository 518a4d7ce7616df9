"""Several hypervisor hosts: a host that does not answer, hosts as headings of listings, and how
to name a VM that several hosts have."""

from __future__ import annotations

from collections.abc import Sequence

from bot.messages.format import when
from bot.mrkdwn import literal
from core.domain.hosts import HostHealth, qualified


def listed_hosts(hosts: Sequence[HostHealth]) -> list[HostHealth]:
    """The hosts a listing is grouped by: every configured host that is not an alias of
    another, when there are several (none with one host: its listings stay as they were)."""
    primaries = [h for h in hosts if h.alias_of is None]
    return primaries if len(primaries) > 1 else []


def host_unreachable(host: HostHealth) -> str:
    """One line for a host that does not answer: since when, and what it last said."""
    since = f" since {when(host.down_since)}" if host.down_since is not None else ""
    why = f": {literal(host.last_error)}" if host.last_error else " (not reached yet)"
    return (
        f"Host *{literal(host.name)}* ({literal(host.uri)}) is unreachable{since}{why}. "
        "Its VMs cannot be listed or acted on until it answers; snapbot keeps trying."
    )


def host_heading(host: HostHealth, vm_count: int) -> str:
    """The line above a reachable host's VMs in a listing."""
    return f"Host *{literal(host.name)}* ({literal(host.uri)}): {vm_count} VM(s)"


def hosts_summary(hosts: Sequence[HostHealth], vm_counts: dict[str, int]) -> str:
    """The Home tab's line per host: how many of the person's VMs it has, or that it is down."""
    lines = []
    for host in listed_hosts(hosts):
        if host.reachable:
            lines.append(f"• {literal(host.name)}: {vm_counts.get(host.name, 0)} VM(s)")
        else:
            lines.append("• " + host_unreachable(host))
    return "\n".join(lines)


def vm_on_host(host: str | None, name: str) -> str:
    """A VM's name as a person types it where several hosts may have that name."""
    return literal(qualified(host, name))


def vm_ambiguous(name: str, candidates: Sequence[str]) -> str:
    """A name several hosts have: the names that tell them apart."""
    names = ", ".join(f"`{literal(c)}`" for c in candidates)
    if len(candidates) == 1:
        return (
            f"More than one host has a VM named `{literal(name)}`; the one you may act on is "
            f"{names}. Type it with its host, as `{literal(candidates[0])}`. Nothing was changed."
        )
    return (
        f"Several hosts have a VM named `{literal(name)}`: {names}. Type it with its host "
        f"before a slash, such as `{literal(candidates[0])}`. Nothing was changed."
    )
