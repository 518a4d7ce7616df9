"""Restore drills: a restore point brought up as an isolated throwaway VM, booted, judged ready,
and removed again. What an operator shows an auditor: the point restores, how old it was (the
data a real recovery would lose) and how long the VM took to be ready (how long one would take).

Pure values and rules: which signal says a VM is ready, per VM pattern from the configuration,
what a drill recorded, and which VMs went too long without a passing one.
"""

from __future__ import annotations

import enum
import fnmatch
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.errors import CoreError, InvalidInput

# A throwaway VM's name starts with this: the start-up sweep removes only domains named so and
# carrying snapbot's drill metadata.
DRILL_VM_PREFIX = "snapbot-drill-"
DEFAULT_READY_TIMEOUT = 300.0
# A VM without a passing drill in this long is flagged in the weekly report.
DRILL_OVERDUE_DAYS = 35
# A drill schedule drills each VM that had no passing drill in this long: with a daily or
# weekly schedule, every VM at least once a month.
DRILL_EVERY_DAYS = 30
ERROR_MAX_LENGTH = 2000
# Screenshots are kept with the drill record: a console at 720x400 is a few KiB as PNG; a
# larger one (a graphical desktop) is not kept beyond this.
SCREENSHOT_MAX_BYTES = 2 * 1024 * 1024


class DrillFailed(CoreError):
    """The throwaway VM did not come up ready: ``detail`` says what was seen instead."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ReadyKind(enum.Enum):
    """What says a booted throwaway VM is ready."""

    # The guest agent answers a ping.
    AGENT = "agent"
    # A line on the serial console matches a regular expression.
    CONSOLE = "console"
    # A command run in the guest through its agent exits with status 0.
    COMMAND = "command"


@dataclass(frozen=True, slots=True)
class ReadySignal:
    kind: ReadyKind
    # The console regex or the command line (empty for AGENT).
    argument: str = ""

    def describe(self) -> str:
        if self.kind is ReadyKind.AGENT:
            return "the guest agent answering"
        if self.kind is ReadyKind.CONSOLE:
            return f"a console line matching /{self.argument}/"
        return f"the check command `{self.argument}` exiting with 0"

    @property
    def needs_agent(self) -> bool:
        return self.kind is not ReadyKind.CONSOLE


def parse_ready(text: str, where: str) -> ReadySignal:
    """``agent``, ``console:<regex>`` or ``command:<command line>``."""
    head, sep, rest = text.partition(":")
    head = head.strip().lower()
    if head == "agent" and not sep:
        return ReadySignal(ReadyKind.AGENT)
    if head == "console" and rest:
        try:
            re.compile(rest)
        except re.error as exc:
            raise InvalidInput(
                f"{where}: the console pattern {rest!r} is not a regex: {exc}"
            ) from None
        return ReadySignal(ReadyKind.CONSOLE, rest)
    if head == "command" and rest.strip():
        return ReadySignal(ReadyKind.COMMAND, rest.strip())
    raise InvalidInput(
        f'{where}: ready = {text!r} is not a readiness signal; use "agent", '
        '"console:<regex>" (a line on the serial console) or "command:<command>" (run '
        "through the guest agent, ready when it exits with 0)"
    )


@dataclass(frozen=True, slots=True)
class DrillPolicy:
    """How drills of the VMs a pattern matches are judged and who hears of a failure."""

    pattern: str
    ready: ReadySignal | None = None
    timeout: float = DEFAULT_READY_TIMEOUT
    # A chat user id (Slack ``U…``) mentioned in the report of this VM's drills.
    owner: str | None = None

    def matches(self, vm_name: str) -> bool:
        return fnmatch.fnmatchcase(vm_name, self.pattern)


@dataclass(frozen=True, slots=True)
class DrillPolicies:
    """The ``[drills.<vm-pattern>]`` tables, in the order written: the first match wins."""

    policies: tuple[DrillPolicy, ...] = ()

    def for_vm(self, vm_name: str) -> DrillPolicy:
        for policy in self.policies:
            if policy.matches(vm_name):
                return policy
        return DrillPolicy(pattern="*")


def parse_drill_policies(table: Mapping[str, object]) -> DrillPolicies:
    """``[drills."web-*"]`` tables: ``ready``, ``timeout`` (seconds), ``owner``."""
    found = []
    for pattern, raw in table.items():
        where = f"[drills.{pattern!r}]"
        if not isinstance(raw, Mapping):
            raise InvalidInput(f"{where} in SNAPBOT_CONFIG must be a table")
        unknown = sorted(set(raw) - {"ready", "timeout", "owner"})
        if unknown:
            raise InvalidInput(f"{where} has {', '.join(unknown)}; it takes ready, timeout, owner")
        ready = raw.get("ready")
        timeout = raw.get("timeout", DEFAULT_READY_TIMEOUT)
        owner = raw.get("owner")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise InvalidInput(f"{where}: timeout must be a number of seconds above 0")
        if owner is not None and (not isinstance(owner, str) or not owner.strip()):
            raise InvalidInput(f"{where}: owner must be a user id such as U012ABCDEF")
        found.append(
            DrillPolicy(
                pattern=pattern,
                ready=None if ready is None else parse_ready(str(ready), where),
                timeout=float(timeout),
                owner=owner.strip() if isinstance(owner, str) else None,
            )
        )
    return DrillPolicies(tuple(found))


def choose_signal(policy: DrillPolicy, *, has_agent: bool, vm_name: str) -> ReadySignal:
    """The configured signal, else the guest agent where the VM has its channel; without
    either, ``InvalidInput`` saying how to configure one."""
    if policy.ready is not None:
        if policy.ready.needs_agent and not has_agent:
            raise InvalidInput(
                f"the drill of {vm_name} waits for {policy.ready.describe()}, but the VM has "
                "no guest agent channel: add one, or judge it by its console with "
                f'[drills."{vm_name}"] ready = "console:<regex>" in SNAPBOT_CONFIG'
            )
        return policy.ready
    if has_agent:
        return ReadySignal(ReadyKind.AGENT)
    raise InvalidInput(
        f"snapbot cannot tell when a restored {vm_name} is ready: it has no guest agent "
        f'channel. Configure a console line it prints once up, in SNAPBOT_CONFIG: [drills."'
        f'{vm_name}"] ready = "console:<regex>" (or give the VM a guest agent)'
    )


class DrillResult(enum.Enum):
    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"


class DrillSource(enum.Enum):
    """Where the restore point comes from."""

    # A restore point in the backup store (incremental, or an archived full snapshot).
    STORE = "store"
    # A full snapshot inside the VM's images: its disk state only (memory is not part of it).
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Drill:
    """One drill as recorded: started RUNNING, then PASSED or FAILED."""

    id: str
    vm_uuid: str
    vm_name: str
    label: str
    # The catalogue key of the snapshot drilled (``sb-…`` or ``pt-…``), and for store points
    # the point id.
    libvirt_name: str
    point_id: str | None
    source: DrillSource
    point_created_at: datetime
    started_at: datetime
    requested_by: str
    result: DrillResult = DrillResult.RUNNING
    finished_at: datetime | None = None
    # Seconds from starting the throwaway VM to its ready signal (None: never ready).
    ready_seconds: float | None = None
    error: str | None = None
    screenshot: bytes | None = None
    # The throwaway VM's name (for the audit trail: what the sweep would look for).
    throwaway_name: str = ""

    @property
    def point_age(self) -> timedelta:
        """How much a real recovery from this point would lose: its age when drilled."""
        return max(self.started_at - self.point_created_at, timedelta(0))


def new_drill_id() -> str:
    return secrets.token_hex(8)


def throwaway_name(vm_name: str, drill_id: str) -> str:
    """``snapbot-drill-<vm>-<id>``, within libvirt's and file names' reach."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", vm_name)[:40].strip("-.") or "vm"
    return f"{DRILL_VM_PREFIX}{cleaned}-{drill_id[:8]}"


def clip_error(text: str) -> str:
    return text if len(text) <= ERROR_MAX_LENGTH else text[: ERROR_MAX_LENGTH - 1] + "…"


def last_passed(drills: Iterable[Drill]) -> dict[str, Drill]:
    """The newest passing drill per VM UUID."""
    best: dict[str, Drill] = {}
    for drill in drills:
        if drill.result is not DrillResult.PASSED:
            continue
        known = best.get(drill.vm_uuid)
        if known is None or drill.started_at > known.started_at:
            best[drill.vm_uuid] = drill
    return best


@dataclass(frozen=True, slots=True)
class OverdueVm:
    vm_uuid: str
    vm_name: str
    last_passed: Drill | None


def overdue(
    vms: Sequence[tuple[str, str]],
    drills: Iterable[Drill],
    now: datetime,
    *,
    days: int = DRILL_OVERDUE_DAYS,
) -> list[OverdueVm]:
    """The VMs (uuid, name) without a passing drill in the last ``days`` days."""
    passed = last_passed(drills)
    limit = now - timedelta(days=days)
    found = []
    for vm_uuid, name in vms:
        last = passed.get(vm_uuid)
        if last is None or last.started_at < limit:
            found.append(OverdueVm(vm_uuid, name, last))
    return found


def drilled_within(drills: Iterable[Drill], vm_uuid: str, now: datetime, days: int) -> bool:
    """Whether the VM had a passing drill in the last ``days`` days (a scheduled drill run
    skips it)."""
    last = last_passed(drills).get(vm_uuid)
    return last is not None and last.started_at >= now - timedelta(days=days)
