"""``snapbot doctor``: check what a first install gets wrong, before the bot meets a user.

Each check gives one ``Finding`` (OK, WARN or FAIL, with the facts that explain it); the
wording and the fix for each problem live in ``bot.messages.doctor``. The checks reach libvirt,
the catalogue database and Slack through the ports below, so a test can break each one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.config import Settings
from core.domain.hosts import HostConfig
from core.domain.vm import DiskFormat
from core.errors import CoreError
from core.ports import Clock, Hypervisor

# Below this much free space where a VM's snapshots write, a snapshot with memory state may not
# fit; the check warns rather than fails (a disk-only snapshot of a small VM still fits).
LOW_SPACE_BYTES = 2 * 1024**3


class Status(enum.Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


class Problem(enum.Enum):
    """What a check found; ``bot.messages.doctor`` has the sentence and the fix for each."""

    NONE = "none"
    LIBVIRT_UNREACHABLE = "libvirt_unreachable"
    LIBVIRT_READ_ONLY = "libvirt_read_only"
    NO_VMS = "no_vms"
    DISK_NOT_QCOW2 = "disk_not_qcow2"
    NOT_CHECKED = "not_checked"
    SPACE_LOW = "space_low"
    SPACE_UNKNOWN = "space_unknown"
    DATABASE_UNREACHABLE = "database_unreachable"
    DATABASE_NEW = "database_new"
    DATABASE_NEEDS_UPGRADE = "database_needs_upgrade"
    DATABASE_TOO_NEW = "database_too_new"
    SLACK_NOT_CONFIGURED = "slack_not_configured"
    SLACK_AUTH_FAILED = "slack_auth_failed"
    SLACK_SCOPES_UNKNOWN = "slack_scopes_unknown"
    SLACK_SCOPES_MISSING = "slack_scopes_missing"
    SOCKET_MODE_FAILED = "socket_mode_failed"
    PUBLIC_URL_UNKNOWN = "public_url_unknown"
    PUBLIC_URL_BAD = "public_url_bad"
    TIMEZONE_INVALID = "timezone_invalid"
    BACKUP_STORE_NONE = "backup_store_none"
    BACKUP_STORE_NOT_WRITABLE = "backup_store_not_writable"
    BACKUP_STORE_SAME_DISK = "backup_store_same_disk"
    BACKUP_STORE_LOW = "backup_store_low"
    BACKUP_TOOLS_MISSING = "backup_tools_missing"
    OFFSITE_UNUSABLE = "offsite_unusable"


class Check(enum.Enum):
    LIBVIRT = "libvirt"
    DISKS = "disk formats"
    SPACE = "free space"
    DATABASE = "database"
    SLACK_TOKEN = "Slack token"
    SLACK_SCOPES = "Slack scopes"
    SLACK_TRANSPORT = "Slack transport"
    TIMEZONE = "time zone"
    BACKUP_STORE = "backup store"
    OFFSITE = "offsite copy"


@dataclass(frozen=True, slots=True)
class Finding:
    check: Check
    status: Status
    problem: Problem
    facts: Mapping[str, str] = field(default_factory=dict)


class Rights(enum.Enum):
    READ_WRITE = "read-write"
    READ_ONLY = "read-only"


class SchemaState(enum.Enum):
    UP_TO_DATE = "up to date"
    EMPTY = "empty"
    NEEDS_UPGRADE = "needs upgrade"
    NEWER_THAN_CODE = "newer than the code"


@dataclass(frozen=True, slots=True)
class Schema:
    state: SchemaState
    # Migrations the database lacks (NEEDS_UPGRADE) or has that this code does not know (NEWER).
    migrations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SlackAuth:
    """``auth.test``'s answer: ``error`` set when Slack refused the token; ``scopes`` None when
    Slack did not say which were granted."""

    error: str | None
    team: str | None = None
    scopes: frozenset[str] | None = None


class LibvirtProbe(Protocol):
    async def rights(self, uri: str) -> Rights:
        """Which rights a connection to ``uri`` gets; ``HypervisorUnavailable`` if none."""
        ...


class SchemaProbe(Protocol):
    async def schema(self, database_url: str) -> Schema:
        """The database's migration state, changing nothing; ``CoreError`` if unreachable."""
        ...


class SlackProbe(Protocol):
    async def auth_test(self, token: str) -> SlackAuth: ...

    async def open_socket(self, app_token: str) -> str | None:
        """None when Socket Mode can open a connection with ``app_token``, else Slack's error."""
        ...


@dataclass(frozen=True, slots=True)
class StoreFacts:
    """The backup store's directory as the host sees it. ``device`` is the filesystem's id,
    compared with the VMs' disks: a store on the same filesystem dies with them."""

    writable: bool
    free_bytes: int | None
    device: int | None
    # Programs and libraries incremental snapshots need that this host lacks.
    missing_tools: tuple[str, ...]


class BackupStoreProbe(Protocol):
    async def facts(self, directory: Path) -> StoreFacts: ...

    async def device_of(self, path: str) -> int | None:
        """The filesystem id of a VM's disk image (None: it cannot be read from here)."""
        ...


class OffsiteProbe(Protocol):
    async def problem(self, url: str, bucket: str, region: str) -> str | None:
        """None when the bucket answers and takes a write (removed at once), else why not."""
        ...


@dataclass(frozen=True, slots=True)
class DoctorPorts:
    libvirt: LibvirtProbe
    schema: SchemaProbe
    slack: SlackProbe
    clock: Clock
    backup: BackupStoreProbe
    offsite: OffsiteProbe | None = None


class Doctor:
    """Runs every check; none stops the others (an operator wants the whole list at once)."""

    def __init__(
        self,
        settings: Settings,
        hypervisor: Hypervisor,
        ports: DoctorPorts,
        *,
        required_scopes: frozenset[str],
        public_url: str | None,
        hosts: Mapping[str, Hypervisor] | None = None,
    ) -> None:
        self._settings = settings
        self._hv = hypervisor
        # Each configured host's own hypervisor by name, where there are several: disks and
        # free space are checked on each (None: on ``hypervisor`` alone).
        self._hosts = hosts
        self._ports = ports
        self._required_scopes = required_scopes
        self._public_url = public_url
        # (vm:target, image path) of every VM disk seen by the disk check
        self._disk_paths: list[tuple[str, str]] = []

    async def run(self) -> list[Finding]:
        configs = self._settings.host_configs()
        findings = [await self._libvirt(host) for host in configs]
        if self._hosts is not None and len(configs) > 1:
            findings += await self._each_host(configs, list(findings))
        elif all(f.status is Status.FAIL for f in findings):
            # Disks and space are read through libvirt: nothing more can be known about them.
            reason = {"why": "libvirt is unreachable"}
            findings += [
                Finding(Check.DISKS, Status.WARN, Problem.NOT_CHECKED, reason),
                Finding(Check.SPACE, Status.WARN, Problem.NOT_CHECKED, reason),
            ]
        else:
            findings += await self._vms()
        findings.append(await self._backup_store())
        if self._settings.offsite is not None and self._ports.offsite is not None:
            findings.append(await self._offsite(self._ports.offsite))
        findings.append(await self._database())
        findings += await self._slack()
        findings.append(self._timezone())
        return findings

    async def _libvirt(self, host: HostConfig) -> Finding:
        """One configured host: does libvirt answer there, and with which rights. Several
        hosts give one finding each, ``host`` naming it."""
        uri = host.uri
        named: dict[str, str] = {"uri": uri}
        if self._settings.hosts:
            named["host"] = host.name
        try:
            rights = await self._ports.libvirt.rights(uri)
        except CoreError as exc:
            return Finding(
                Check.LIBVIRT,
                Status.FAIL,
                Problem.LIBVIRT_UNREACHABLE,
                {**named, "why": str(exc)},
            )
        if rights is Rights.READ_ONLY:
            return Finding(Check.LIBVIRT, Status.FAIL, Problem.LIBVIRT_READ_ONLY, named)
        return Finding(Check.LIBVIRT, Status.OK, Problem.NONE, {**named, "rights": rights.value})

    async def _each_host(
        self, configs: Sequence[HostConfig], libvirt: list[Finding]
    ) -> list[Finding]:
        """Disk formats and free space of each host's VMs, through that host's connection;
        a host whose libvirt check failed is named as not checked. Only the first host's disk
        paths are compared with the backup store's filesystem (the others' are not this
        machine's)."""
        assert self._hosts is not None
        findings: list[Finding] = []
        for index, (host, reached) in enumerate(zip(configs, libvirt, strict=True)):
            named = {"host": host.name}
            hv = self._hosts.get(host.name)
            if reached.status is Status.FAIL or hv is None:
                reason = {**named, "why": f"libvirt on host {host.name} did not answer"}
                findings += [
                    Finding(Check.DISKS, Status.WARN, Problem.NOT_CHECKED, reason),
                    Finding(Check.SPACE, Status.WARN, Problem.NOT_CHECKED, reason),
                ]
                continue
            findings += await self._vms(hv, named, local=index == 0)
        return findings

    async def _vms(
        self,
        hv: Hypervisor | None = None,
        named: Mapping[str, str] | None = None,
        *,
        local: bool = True,
    ) -> list[Finding]:
        hv = self._hv if hv is None else hv
        named = {} if named is None else dict(named)
        found = await self._vm_findings(hv, local=local)
        return [replace(f, facts={**named, **f.facts}) for f in found] if named else found

    async def _vm_findings(self, hv: Hypervisor, *, local: bool) -> list[Finding]:
        try:
            vms = await hv.list_vms()
        except CoreError as exc:
            reason = {"why": str(exc)}
            return [
                Finding(Check.DISKS, Status.WARN, Problem.NOT_CHECKED, reason),
                Finding(Check.SPACE, Status.WARN, Problem.NOT_CHECKED, reason),
            ]
        if not vms:
            return [
                Finding(Check.DISKS, Status.WARN, Problem.NO_VMS),
                Finding(Check.SPACE, Status.WARN, Problem.NO_VMS),
            ]
        bad_disks: list[str] = []
        low: list[str] = []
        unknown: list[str] = []
        tightest: int | None = None
        for vm in sorted(vms, key=lambda v: v.name):
            try:
                facts = await hv.vm_facts(vm)
                places = await hv.snapshot_places(facts)
            except CoreError as exc:
                unknown.append(f"{vm.name} ({exc})")
                continue
            if local:
                self._disk_paths += [
                    (f"{vm.name}:{d.target}", d.path) for d in facts.disks if d.path
                ]
            bad_disks += [
                f"{vm.name}:{d.target} ({d.format_name})"
                for d in facts.disks
                if not d.read_only and d.format is not DiskFormat.QCOW2
            ]
            for place in places:
                if place.available_bytes is None:
                    unknown.append(f"{vm.name}: {place.where} ({place.unknown_because or '?'})")
                    continue
                tightest = (
                    place.available_bytes
                    if tightest is None
                    else min(tightest, place.available_bytes)
                )
                if place.available_bytes < LOW_SPACE_BYTES:
                    low.append(f"{vm.name}: {place.where} ({_gib(place.available_bytes)})")
        count = {"vms": str(len(vms))}
        if bad_disks:
            disks = Finding(
                Check.DISKS, Status.FAIL, Problem.DISK_NOT_QCOW2, {"disks": ", ".join(bad_disks)}
            )
        else:
            disks = Finding(Check.DISKS, Status.OK, Problem.NONE, count)
        if low:
            space = Finding(
                Check.SPACE,
                Status.WARN,
                Problem.SPACE_LOW,
                {"places": "; ".join(low), "need": _gib(LOW_SPACE_BYTES)},
            )
        elif unknown:
            space = Finding(
                Check.SPACE, Status.WARN, Problem.SPACE_UNKNOWN, {"why": "; ".join(unknown)}
            )
        else:
            least = {"least": _gib(tightest) if tightest is not None else "?"}
            space = Finding(Check.SPACE, Status.OK, Problem.NONE, {**count, **least})
        return [disks, space]

    async def _backup_store(self) -> Finding:
        directory = self._settings.backup_dir
        if directory is None:
            return Finding(Check.BACKUP_STORE, Status.WARN, Problem.BACKUP_STORE_NONE)
        where = {"dir": str(directory)}
        facts = await self._ports.backup.facts(directory)
        if facts.missing_tools:
            return Finding(
                Check.BACKUP_STORE,
                Status.FAIL,
                Problem.BACKUP_TOOLS_MISSING,
                {**where, "tools": ", ".join(facts.missing_tools)},
            )
        if not facts.writable:
            return Finding(
                Check.BACKUP_STORE, Status.FAIL, Problem.BACKUP_STORE_NOT_WRITABLE, where
            )
        shared = [
            name
            for name, path in self._disk_paths
            if facts.device is not None and await self._ports.backup.device_of(path) == facts.device
        ]
        if shared:
            return Finding(
                Check.BACKUP_STORE,
                Status.WARN,
                Problem.BACKUP_STORE_SAME_DISK,
                {**where, "disks": ", ".join(shared)},
            )
        free = "?" if facts.free_bytes is None else _gib(facts.free_bytes)
        if facts.free_bytes is not None and facts.free_bytes < LOW_SPACE_BYTES:
            return Finding(
                Check.BACKUP_STORE,
                Status.WARN,
                Problem.BACKUP_STORE_LOW,
                {**where, "free": free, "need": _gib(LOW_SPACE_BYTES)},
            )
        return Finding(Check.BACKUP_STORE, Status.OK, Problem.NONE, {**where, "free": free})

    async def _offsite(self, probe: OffsiteProbe) -> Finding:
        offsite = self._settings.offsite
        assert offsite is not None
        where = {"where": f"{offsite.url.rstrip('/')}/{offsite.bucket}"}
        why = await probe.problem(offsite.url, offsite.bucket, offsite.region)
        if why is not None:
            return Finding(
                Check.OFFSITE, Status.FAIL, Problem.OFFSITE_UNUSABLE, {**where, "why": why}
            )
        return Finding(Check.OFFSITE, Status.OK, Problem.NONE, where)

    async def _database(self) -> Finding:
        url = _without_password(self._settings.database_url)
        try:
            schema = await self._ports.schema.schema(self._settings.database_url)
        except CoreError as exc:
            return Finding(
                Check.DATABASE,
                Status.FAIL,
                Problem.DATABASE_UNREACHABLE,
                {"url": url, "why": str(exc)},
            )
        facts = {"url": url, "migrations": ", ".join(schema.migrations)}
        match schema.state:
            case SchemaState.UP_TO_DATE:
                return Finding(Check.DATABASE, Status.OK, Problem.NONE, facts)
            case SchemaState.EMPTY:
                return Finding(Check.DATABASE, Status.OK, Problem.DATABASE_NEW, facts)
            case SchemaState.NEEDS_UPGRADE:
                return Finding(Check.DATABASE, Status.WARN, Problem.DATABASE_NEEDS_UPGRADE, facts)
            case SchemaState.NEWER_THAN_CODE:
                return Finding(Check.DATABASE, Status.FAIL, Problem.DATABASE_TOO_NEW, facts)

    async def _slack(self) -> list[Finding]:
        slack = self._settings.slack
        if slack is None:
            return [Finding(Check.SLACK_TOKEN, Status.WARN, Problem.SLACK_NOT_CONFIGURED)]
        try:
            auth = await self._ports.slack.auth_test(slack.bot_token.reveal())
        except CoreError as exc:
            auth = SlackAuth(error=str(exc))
        if auth.error is not None:
            token = Finding(
                Check.SLACK_TOKEN, Status.FAIL, Problem.SLACK_AUTH_FAILED, {"error": auth.error}
            )
            return [token, await self._transport()]
        findings = [Finding(Check.SLACK_TOKEN, Status.OK, Problem.NONE, {"team": auth.team or "?"})]
        if auth.scopes is None:
            findings.append(Finding(Check.SLACK_SCOPES, Status.WARN, Problem.SLACK_SCOPES_UNKNOWN))
        elif missing := sorted(self._required_scopes - auth.scopes):
            findings.append(
                Finding(
                    Check.SLACK_SCOPES,
                    Status.FAIL,
                    Problem.SLACK_SCOPES_MISSING,
                    {"missing": ", ".join(missing)},
                )
            )
        else:
            findings.append(
                Finding(
                    Check.SLACK_SCOPES,
                    Status.OK,
                    Problem.NONE,
                    {"scopes": ", ".join(sorted(self._required_scopes))},
                )
            )
        findings.append(await self._transport())
        return findings

    async def _transport(self) -> Finding:
        slack = self._settings.slack
        assert slack is not None
        if slack.app_token is not None:
            try:
                error = await self._ports.slack.open_socket(slack.app_token.reveal())
            except CoreError as exc:
                error = str(exc)
            if error is not None:
                return Finding(
                    Check.SLACK_TRANSPORT, Status.FAIL, Problem.SOCKET_MODE_FAILED, {"error": error}
                )
            return Finding(Check.SLACK_TRANSPORT, Status.OK, Problem.NONE, {"mode": "Socket Mode"})
        # HTTP mode: Slack must reach this process; only the operator knows the public address.
        if self._public_url is None:
            return Finding(
                Check.SLACK_TRANSPORT,
                Status.WARN,
                Problem.PUBLIC_URL_UNKNOWN,
                {"port": str(slack.port)},
            )
        if not self._public_url.startswith("https://") or not self._public_url.rstrip("/").endswith(
            "/slack/events"
        ):
            return Finding(
                Check.SLACK_TRANSPORT,
                Status.FAIL,
                Problem.PUBLIC_URL_BAD,
                {"url": self._public_url},
            )
        return Finding(
            Check.SLACK_TRANSPORT, Status.OK, Problem.NONE, {"mode": f"HTTP at {self._public_url}"}
        )

    def _timezone(self) -> Finding:
        name = self._settings.timezone
        try:
            zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return Finding(Check.TIMEZONE, Status.FAIL, Problem.TIMEZONE_INVALID, {"zone": name})
        now: datetime = self._ports.clock.now().astimezone(zone)
        return Finding(
            Check.TIMEZONE, Status.OK, Problem.NONE, {"zone": name, "now": now.strftime("%H:%M %Z")}
        )


def failed(findings: list[Finding]) -> bool:
    return any(f.status is Status.FAIL for f in findings)


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def _without_password(url: str) -> str:
    """The database URL as it may be printed: a password in it is replaced by ***."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
