"""Hypervisor hosts as the domain sees them: their configured names, how a VM is named on one of
several hosts (``hv1/web-01``), and what is known of each host's health.

A host is configured by a short name and a libvirt URI; its identity is the host UUID libvirt's
capabilities report, so two URIs reaching the same hypervisor are one host.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from core.errors import InvalidInput

DEFAULT_MAX_OPERATIONS = 2
# The name of a host whose URI names no machine (qemu:///system, qemu:///session, test:///...).
LOCAL_HOST_NAME = "local"
HOST_NAME_MAX = 32
_HOST_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")
# What separates a host's name from a VM's name: libvirt allows "/" in no domain name.
SEPARATOR = "/"


@dataclass(frozen=True, slots=True)
class HostConfig:
    """One configured host: ``[[hosts]]`` in the TOML file, or ``LIBVIRT_URI`` alone."""

    name: str
    uri: str
    # How many snapbot operations may run on the host at once (others wait for a slot).
    max_operations: int = DEFAULT_MAX_OPERATIONS


@dataclass(frozen=True, slots=True)
class HostIdentity:
    """The host a VM lives on: its configured name, the URI snapbot reaches it by, and its
    UUID (what catalogue records and operation details keep)."""

    name: str
    uri: str
    uuid: str


@dataclass(frozen=True, slots=True)
class HostHealth:
    """What is known of one configured host right now, for listings, Home, reports and
    metrics. An alias is a configured name that reached the same hypervisor as another
    (``alias_of``): it is not listed on its own and its VMs are the other's."""

    name: str
    uri: str
    reachable: bool
    last_error: str | None
    attempts: int
    host_uuid: str | None = None
    alias_of: str | None = None
    # Operations running on the host now, and its limit (None: not limited here).
    operations: int = 0
    max_operations: int | None = None
    # When it was last found not answering (None: it answers, or was never reached yet).
    down_since: datetime | None = None


def host_name_from_uri(uri: str) -> str:
    """The name of the single host ``LIBVIRT_URI`` configures: the machine its URI names
    (``qemu+ssh://root@hv1.example.com/system`` is ``hv1``), else ``local``."""
    hostname = urlsplit(uri).hostname
    if not hostname:
        return LOCAL_HOST_NAME
    first = hostname.split(".")[0] if not _is_address(hostname) else hostname
    name = re.sub(r"[^a-z0-9-]+", "-", first.lower()).strip("-")[:HOST_NAME_MAX].strip("-")
    return name or LOCAL_HOST_NAME


def _is_address(hostname: str) -> bool:
    return bool(re.match(r"^[0-9.]+$", hostname)) or ":" in hostname


def validate_host_name(name: str) -> str:
    """A host's name as users type it before ``/``: short, lower case, digits and ``-``."""
    if not _HOST_NAME.match(name):
        raise InvalidInput(
            f"host name {name!r} must be 1-{HOST_NAME_MAX} characters of a-z, 0-9 and '-', "
            "not starting or ending with '-' (it is typed as hv1/web-01)"
        )
    return name


def parse_hosts(tables: object) -> tuple[HostConfig, ...]:
    """The ``[[hosts]]`` tables of the configuration file, checked: every host has a valid
    unique name and a unique URI, and a limit of at least 1."""
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise InvalidInput(
            "[[hosts]] in SNAPBOT_CONFIG must be a list of tables, each with name and uri"
        )
    hosts: list[HostConfig] = []
    for index, table in enumerate(tables, start=1):
        unknown = sorted(set(table) - {"name", "uri", "max_operations"})
        if unknown:
            raise InvalidInput(
                f"host #{index} in [[hosts]] has unknown keys {', '.join(unknown)}; a host has "
                "name, uri and max_operations"
            )
        name, uri = table.get("name"), table.get("uri")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f'host #{index} in [[hosts]] needs a name (such as name = "hv1")')
        validate_host_name(name)
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidInput(
                f"host {name} in [[hosts]] needs a libvirt uri (such as "
                'uri = "qemu+ssh://root@hv1/system")'
            )
        limit = table.get("max_operations", DEFAULT_MAX_OPERATIONS)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(
                f"max_operations of host {name} must be a whole number of at least 1, not {limit!r}"
            )
        for seen in hosts:
            if seen.name == name:
                raise InvalidInput(f"host name {name!r} appears twice in [[hosts]]")
            if seen.uri == uri.strip():
                raise InvalidInput(
                    f"hosts {seen.name} and {name} have the same uri {uri.strip()}: list each "
                    "hypervisor once"
                )
        hosts.append(HostConfig(name, uri.strip(), limit))
    return tuple(hosts)


@dataclass(frozen=True, slots=True)
class VmRef:
    """A VM as a user names it: ``web-01``, or ``hv1/web-01`` on host ``hv1``."""

    host: str | None
    name: str

    def __str__(self) -> str:
        return qualified(self.host, self.name)


def split_vm_ref(text: str) -> VmRef:
    """``hv1/web-01`` → host ``hv1``, VM ``web-01``; a name without ``/`` names no host."""
    host, sep, name = text.partition(SEPARATOR)
    if not sep:
        return VmRef(None, text)
    return VmRef(host, name)


def qualified(host: str | None, name: str) -> str:
    """How a VM on ``host`` is named where its name alone may be ambiguous."""
    return name if host is None else f"{host}{SEPARATOR}{name}"


def unreachable(health: Sequence[HostHealth]) -> list[HostHealth]:
    """The hosts that do not answer now (aliases follow their host and are left out)."""
    return [h for h in health if not h.reachable and h.alias_of is None]


def suggestable_names(typed: str, located: Iterable[tuple[str | None, str]]) -> list[str]:
    """The names of VMs (``(host, name)`` each) to suggest for ``typed``, as a person would
    type them: with their host where ``typed`` named one or where several hosts share the
    name, else the name alone."""
    pairs = list(located)
    shared = Counter(name for _, name in pairs)
    with_host = split_vm_ref(typed).host is not None
    return [
        qualified(host, name) if with_host or shared[name] > 1 else name for host, name in pairs
    ]


def several(health: Sequence[HostHealth]) -> list[HostHealth]:
    """The configured hosts that are not aliases, when there are several (else none): what
    listings and reports group by."""
    primaries = [h for h in health if h.alias_of is None]
    return primaries if len(primaries) > 1 else []


def covers_host(pattern: str, host: str) -> bool:
    """Whether a schedule's or grant's VM pattern can match VMs on ``host``: a pattern without
    a host (``all``, ``web-*``) matches on every host; ``hv1/web-*`` on ``hv1`` only."""
    ref = split_vm_ref(pattern)
    return ref.host is None or fnmatch.fnmatchcase(host, ref.host)
