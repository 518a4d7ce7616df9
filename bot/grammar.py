"""The command grammar shared by every front end (the console now, Slack next).

A command is the slash command's name and its text, exactly as Slack delivers them; the console
reads whole lines and splits off the name. Parsing is pure: it returns a command value or raises
``UsageError`` naming the command whose usage to show, and nothing else, whatever the text.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

SNAPSHOT = "snapshot"
RESTORE = "restore"
PRUNE = "prune"
COMMANDS = (SNAPSHOT, RESTORE, PRUNE)
PRUNE_ALL = "all"
# The retention options of /prune, in the order the rules apply.
KEEP_OPTIONS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")

# Retention counts above this are typing mistakes (a year of hourly snapshots is 8760).
KEEP_MAX = 100_000
# Slack caps a slash command's text at a few thousand characters; a console line longer than
# this is a paste gone wrong, and would only make every later step (suggestions) slow.
TEXT_MAX = 4000
_COUNT = re.compile(r"[0-9]+")
# libvirt accepts almost any domain name; these are the ones that stay safe as file names (a
# restored copy's disks are named after it), in a shell and in Slack.
VM_NAME_MAX = 64
_VM_NAME = re.compile(r"[A-Za-z0-9._-]+")

# Slack (and phones) turn typed quotes into typographic ones; shlex only knows ASCII quotes.
_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


class UsageError(Exception):
    """The text does not fit the command's grammar. ``command`` is None for an unknown command."""

    def __init__(self, command: str | None, problem: str) -> None:
        super().__init__(problem)
        self.command = command
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Help:
    command: str


@dataclass(frozen=True, slots=True)
class ListVms:
    pass


@dataclass(frozen=True, slots=True)
class ListSnapshots:
    vm: str | None


@dataclass(frozen=True, slots=True)
class CreateSnapshot:
    vm: str
    label: str
    description: str
    hold: bool = False  # held until verified (a before-change snapshot)
    # False: the user chose to go ahead where free space cannot be known (--no-space-check)
    check_space: bool = True
    # A restore point in the backup store (disks and configuration, outside the VM's images)
    # instead of an internal snapshot (--incremental).
    incremental: bool = False


@dataclass(frozen=True, slots=True)
class ArchiveSnapshot:
    """Move an internal snapshot's disk state into the backup store, then delete it."""

    vm: str
    label: str


@dataclass(frozen=True, slots=True)
class VerifyBackups:
    """Re-read what the backup store holds: ``vm`` None every VM, ``label`` None every restore
    point of the VM."""

    vm: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Offsite:
    """The offsite copy of the backup store: ``status`` (what is copied and pending),
    ``copy`` (upload what is new now), ``verify`` (check the copy on its own), or
    ``undelete`` (bring the deleted restore point ``label`` of ``vm`` back from it)."""

    action: str = "status"
    vm: str | None = None
    label: str | None = None


OFFSITE_ACTIONS = ("status", "copy", "verify")


@dataclass(frozen=True, slots=True)
class ShowUsage:
    """Storage usage: ``target`` None the whole host, else a VM's name or the host's name."""

    target: str | None = None


@dataclass(frozen=True, slots=True)
class HoldSnapshot:
    """No ``until`` and not ``verified``: held until released."""

    vm: str
    label: str
    until: str | None
    verified: bool


@dataclass(frozen=True, slots=True)
class Unlock:
    """End a VM's lock that automation could not (admin; shows what holds it first)."""

    vm: str


@dataclass(frozen=True, slots=True)
class RunDrill:
    """``/snapshot drill <vm> [<name>]``: boot a restore point (the newest when ``label`` is
    None) as an isolated throwaway VM and report whether it comes up."""

    vm: str
    label: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseHold:
    vm: str
    label: str


@dataclass(frozen=True, slots=True)
class RetentionScope:
    """What a retention policy decides besides its keep counts (None: the configured default).
    ``include_manual``: manual snapshots are subject to the keep rules too."""

    include_manual: bool = False
    safety_keep_last: int | None = None
    safety_keep_days: int | None = None


@dataclass(frozen=True, slots=True)
class AddSchedule:
    name: str
    vms: str
    when: tuple[str, ...]
    timezone: str | None
    keep: tuple[tuple[str, int], ...]
    channel: str | None
    scope: RetentionScope = RetentionScope()
    # The schedule takes restore points in the backup store instead of internal snapshots.
    incremental: bool = False
    # The schedule verifies what the backup store holds for its VMs instead.
    verify: bool = False
    # Retention moves the full snapshots it would delete into the backup store instead.
    archive: bool = False
    # The schedule runs restore drills of its VMs (those not drilled lately, one at a time).
    drill: bool = False


@dataclass(frozen=True, slots=True)
class ListSchedules:
    pass


@dataclass(frozen=True, slots=True)
class RemoveSchedule:
    key: str


@dataclass(frozen=True, slots=True)
class RunSchedule:
    key: str


@dataclass(frozen=True, slots=True)
class DeleteSnapshot:
    vm: str
    label: str


@dataclass(frozen=True, slots=True)
class RenameSnapshot:
    vm: str
    old_label: str
    new_label: str


@dataclass(frozen=True, slots=True)
class Restore:
    """``label`` None: the front end lets the user pick one of the VM's snapshots. ``as_name``:
    restore a copy as a new VM of that name (``--as``), the original left as it is."""

    vm: str
    label: str | None
    safety_snapshot: bool
    as_name: str | None = None


@dataclass(frozen=True, slots=True)
class Prune:
    """``vm`` None means every VM. ``keep`` maps rule names (``KEEP_OPTIONS``) to counts;
    empty means "the VM's configured policy"."""

    vm: str | None
    keep: tuple[tuple[str, int], ...]
    dry_run: bool
    scope: RetentionScope = RetentionScope()


Command = (
    Help
    | ListVms
    | ListSnapshots
    | CreateSnapshot
    | ArchiveSnapshot
    | VerifyBackups
    | Offsite
    | ShowUsage
    | DeleteSnapshot
    | RenameSnapshot
    | Restore
    | Prune
    | HoldSnapshot
    | ReleaseHold
    | Unlock
    | RunDrill
    | AddSchedule
    | ListSchedules
    | RemoveSchedule
    | RunSchedule
)


def _tokens(command: str, text: str) -> list[str]:
    if len(text) > TEXT_MAX:
        raise UsageError(
            command, f"the command is {len(text)} characters long; the limit is {TEXT_MAX}"
        )
    broken = next((c for c in text if 0xD800 <= ord(c) <= 0xDFFF), None)
    if broken is not None:
        # Bytes that are not UTF-8 (a terminal in another encoding) arrive as lone surrogates;
        # no VM or snapshot name can hold one, and libvirt cannot even be asked about it.
        raise UsageError(
            command,
            f"the command contains bytes that are not UTF-8 (U+{ord(broken):04X}); "
            "type it again in a UTF-8 terminal",
        )
    try:
        return shlex.split(text.translate(_QUOTES))
    except ValueError as exc:  # an unclosed quote
        raise UsageError(command, f"the quotes do not match ({exc})") from exc


def _options(
    command: str, words: list[str], known: dict[str, bool]
) -> tuple[list[str], dict[str, str]]:
    """Split ``--name value`` / ``--name=value`` / ``--flag`` options from positional words.
    ``known`` maps option names to whether they take a value."""
    positional: list[str] = []
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            if name not in known:
                raise UsageError(command, f"unknown option --{_shown(name)}")
            if name in options:
                raise UsageError(command, f"--{name} is given twice; give it once")
            if known[name]:
                if not eq:
                    i += 1
                    if i >= len(words):
                        raise UsageError(command, f"--{name} needs a value")
                    value = words[i]
                options[name] = value
            else:
                if eq:
                    raise UsageError(command, f"--{name} takes no value")
                options[name] = ""
        else:
            positional.append(word)
        i += 1
    return positional, options


def _shown(text: str, limit: int = 40) -> str:
    """Echo a piece of what was typed, shortened: an error names it, it does not repeat a page."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expect(command: str, words: list[str], count: int, what: str) -> list[str]:
    if len(words) < count:
        raise UsageError(command, f"missing {what}")
    if len(words) > count:
        extra = _shown(" ".join(words[count:]))
        raise UsageError(command, f"unexpected {extra!r} after {what}")
    return words


def parse(command: str, text: str) -> Command:
    """Parse the text of ``/<command>``."""
    name = command.lstrip("/")
    if name == SNAPSHOT:
        return _parse_snapshot(text)
    if name == RESTORE:
        return _parse_restore(text)
    if name == PRUNE:
        return _parse_prune(text)
    raise UsageError(None, f"unknown command /{_shown(name)}")


def parse_line(line: str) -> Command:
    """Parse a console line: ``/snapshot web-01 before-upgrade``."""
    head, _, rest = line.strip().partition(" ")
    if not head.startswith("/"):
        raise UsageError(None, f"commands start with /, e.g. /{SNAPSHOT} help")
    return parse(head, rest)


_KEEP = {f"keep-{rule}": True for rule in KEEP_OPTIONS} | {
    "include-manual": False,
    "safety-keep-last": True,
    "safety-keep-days": True,
}
_SNAPSHOT_OPTIONS = {
    "desc": True,
    "description": True,
    "hold": False,
    "incremental": False,
    "verify": False,
    "drill": False,
    "archive": False,
    "no-space-check": False,
    "until": True,
    "until-verified": False,
    "tz": True,
    "channel": True,
} | _KEEP
# Which options each /snapshot form accepts (the key None: creating a snapshot).
_ALLOWED: dict[str | None, set[str]] = {
    None: {"desc", "description", "hold", "no-space-check", "incremental"},
    "hold": {"until", "until-verified"},
    "schedule add": {"tz", "channel", "incremental", "verify", "drill", "archive", *_KEEP},
}


def _keep(command: str, options: dict[str, str]) -> tuple[tuple[str, int], ...]:
    keep: list[tuple[str, int]] = []
    for rule in KEEP_OPTIONS:
        value = options.get(f"keep-{rule}")
        if value is not None:
            keep.append((rule, _count(command, f"keep-{rule}", value)))
    return tuple(keep)


def _count(command: str, option: str, value: str) -> int:
    # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
    if not _COUNT.fullmatch(value):
        raise UsageError(
            command, f"--{option} needs a whole number such as 7, not {_shown(value)!r}"
        )
    if len(value.lstrip("0")) > len(str(KEEP_MAX)) or int(value) > KEEP_MAX:
        raise UsageError(
            command, f"--{option} {_shown(value)} is too large; the limit is {KEEP_MAX}"
        )
    return int(value)


def _scope(command: str, options: dict[str, str]) -> RetentionScope:
    def count(option: str) -> int | None:
        value = options.get(option)
        return None if value is None else _count(command, option, value)

    return RetentionScope(
        "include-manual" in options, count("safety-keep-last"), count("safety-keep-days")
    )


def _check_options(form: str | None, options: dict[str, str]) -> None:
    extra = sorted(set(options) - _ALLOWED.get(form, set()))
    if extra:
        where = f"/snapshot {form}" if form else "taking a snapshot"
        raise UsageError(SNAPSHOT, f"--{extra[0]} does not go with {where}")


def _parse_snapshot(text: str) -> Command:
    cmd = SNAPSHOT
    words, options = _options(cmd, _tokens(cmd, text), _SNAPSHOT_OPTIONS)
    if not words:
        if options:
            raise UsageError(cmd, "missing the VM and the snapshot name")
        return Help(cmd)
    sub, rest = words[0], words[1:]
    if sub == "help" and not rest:
        return Help(cmd)
    if sub == "usage":
        _check_options(sub, options)
        if len(rest) > 1:
            extra = _shown(" ".join(rest[1:]))
            raise UsageError(cmd, f"unexpected {extra!r}: usage takes one VM or host name")
        return ShowUsage(rest[0] if rest else None)
    if sub == "offsite":
        _check_options(sub, options)
        action = rest[0] if rest else "status"
        if action == "undelete":
            vm, label = _expect(cmd, rest[1:], 2, "the VM and the deleted snapshot's name")
            return Offsite(action, vm, label)
        if action not in OFFSITE_ACTIONS or len(rest) > 1:
            shown = _shown(" ".join(rest))
            raise UsageError(
                cmd, f"unexpected {shown!r}: offsite takes status, copy, verify or undelete"
            )
        return Offsite(action)
    if sub == "schedule":
        return _parse_schedule(rest, options)
    if sub in ("list", "vms", "delete", "rename", "hold", "release", "unlock", "archive", "verify"):
        _check_options(sub, options)
    if sub == "drill":
        _check_options(sub, options)
        if not rest or len(rest) > 2:
            raise UsageError(cmd, "drill takes a VM and, optionally, a snapshot name")
        return RunDrill(rest[0], rest[1] if len(rest) > 1 else None)
    if sub == "archive":
        vm, label = _expect(cmd, rest, 2, "the VM and the snapshot name")
        return ArchiveSnapshot(vm, label)
    if sub == "verify":
        if len(rest) > 2:
            extra = _shown(" ".join(rest[2:]))
            raise UsageError(cmd, f"unexpected {extra!r}: verify takes a VM and a snapshot name")
        return VerifyBackups(rest[0] if rest else None, rest[1] if len(rest) > 1 else None)
    if sub == "unlock":
        (vm,) = _expect(cmd, rest, 1, "the VM whose lock to end")
        return Unlock(vm)
    if sub == "list":
        if len(rest) > 1:
            raise UsageError(cmd, f"list takes at most one VM name, not {len(rest)}")
        return ListSnapshots(rest[0] if rest else None)
    if sub == "vms":
        _expect(cmd, rest, 0, "vms")
        return ListVms()
    if sub == "delete":
        vm, label = _expect(cmd, rest, 2, "the VM and the snapshot name")
        return DeleteSnapshot(vm, label)
    if sub == "rename":
        vm, old, new = _expect(cmd, rest, 3, "the VM, the current name and the new name")
        return RenameSnapshot(vm, old, new)
    if sub == "hold":
        vm, label = _expect(cmd, rest, 2, "the VM and the snapshot name")
        if "until" in options and "until-verified" in options:
            raise UsageError(cmd, "use --until DATE or --until-verified, not both")
        return HoldSnapshot(vm, label, options.get("until"), "until-verified" in options)
    if sub == "release":
        vm, label = _expect(cmd, rest, 2, "the VM and the snapshot name")
        return ReleaseHold(vm, label)
    if sub == "create":
        words = rest
    _check_options(None, options)
    vm, label = _expect(cmd, words, 2, "the VM and the snapshot name")
    if "desc" in options and "description" in options:
        raise UsageError(cmd, "--desc and --description are the same option; give it once")
    description = options.get("desc", options.get("description", ""))
    incremental = "incremental" in options
    if incremental and "no-space-check" in options:
        # The space check is about growing the VM's own images, which a backup does not do.
        raise UsageError(
            cmd, "--no-space-check is for internal snapshots; an --incremental one needs none"
        )
    return CreateSnapshot(
        vm,
        label,
        description,
        hold="hold" in options,
        check_space="no-space-check" not in options,
        incremental=incremental,
    )


def _parse_schedule(words: list[str], options: dict[str, str]) -> Command:
    cmd = SNAPSHOT
    sub, rest = (words[0], words[1:]) if words else ("", [])
    _check_options(f"schedule {sub}", options)
    if sub == "list":
        _expect(cmd, rest, 0, "schedule list")
        return ListSchedules()
    if sub in ("remove", "run"):
        (key,) = _expect(cmd, rest, 1, "the schedule's id or name")
        return RemoveSchedule(key) if sub == "remove" else RunSchedule(key)
    if sub == "add":
        if len(rest) < 3:
            raise UsageError(cmd, "schedule add needs a name, the VMs and when it runs")
        name, vms, when = rest[0], rest[1], tuple(rest[2:])
        if "incremental" in options and "verify" in options:
            raise UsageError(
                cmd,
                "a schedule takes snapshots (--incremental) or verifies them (--verify); "
                "add two schedules for both",
            )
        if "archive" in options and ("incremental" in options or "verify" in options):
            raise UsageError(
                cmd,
                "--archive moves the full snapshots retention would delete into the backup "
                "store; it goes with a schedule that takes full snapshots",
            )
        if "verify" in options and any(
            o.startswith(("keep-", "safety-", "include-")) for o in options
        ):
            raise UsageError(
                cmd, "a --verify schedule deletes nothing: leave out the --keep-… rules"
            )
        not_with_drill = ("incremental", "verify", "archive", "keep-", "safety-", "include-")
        if "drill" in options and any(o.startswith(not_with_drill) for o in options):
            raise UsageError(
                cmd,
                "a --drill schedule only drills (it takes and deletes nothing): leave out "
                "--incremental, --verify, --archive and the --keep-… rules",
            )
        return AddSchedule(
            name,
            vms,
            when,
            options.get("tz"),
            _keep(cmd, options),
            options.get("channel"),
            _scope(cmd, options),
            incremental="incremental" in options,
            verify="verify" in options,
            archive="archive" in options,
            drill="drill" in options,
        )
    raise UsageError(cmd, "schedule takes add, list, remove or run")


def _parse_restore(text: str) -> Command:
    cmd = RESTORE
    known = {"no-safety-snapshot": False, "as": True}
    words, options = _options(cmd, _tokens(cmd, text), known)
    if words in (["help"], ["usage"]) or (not words and not options):
        return Help(cmd)
    safety = "no-safety-snapshot" not in options
    as_name = None
    if "as" in options:
        as_name = check_vm_name(cmd, options["as"])
        if "no-safety-snapshot" in options:
            # A copy beside the original changes nothing that a safety snapshot could undo.
            raise UsageError(
                cmd, "--no-safety-snapshot does not go with --as: restoring a copy changes no VM"
            )
    if not words:
        raise UsageError(cmd, "missing the VM and the snapshot name")
    if len(words) == 1:
        return Restore(words[0], None, safety_snapshot=safety, as_name=as_name)
    vm, label = _expect(cmd, words, 2, "the VM and the snapshot name")
    if as_name is not None and as_name == vm:
        raise UsageError(
            cmd,
            f"--as names the new VM; {_shown(vm)!r} is the VM restored from. Leave --as out to "
            "restore it in place (or to define it again if it was deleted)",
        )
    return Restore(vm, label, safety_snapshot=safety, as_name=as_name)


def check_vm_name(command: str, name: str) -> str:
    """A name for a VM snapbot defines (``--as``): what every libvirt driver and file system
    accept, with a message naming what is wrong."""
    if not name:
        raise UsageError(command, "--as needs the new VM's name")
    if len(name) > VM_NAME_MAX:
        raise UsageError(
            command,
            f"the new VM's name is {len(name)} characters long; the limit is {VM_NAME_MAX}",
        )
    if "/" in name:
        raise UsageError(command, f"the new VM's name {_shown(name)!r} contains '/'")
    if name.startswith(("-", ".")):
        raise UsageError(
            command,
            f"the new VM's name {_shown(name)!r} starts with {name[0]!r}; start it with "
            "a letter or digit",
        )
    bad = next((c for c in name if not _VM_NAME.fullmatch(c)), None)
    if bad is not None:
        what = "a space" if bad.isspace() else repr(bad)
        raise UsageError(
            command,
            f"the new VM's name {_shown(name)!r} contains {what}; use only ASCII letters, digits, "
            "'.', '_' and '-'",
        )
    return name


def _parse_prune(text: str) -> Command:
    cmd = PRUNE
    known = _KEEP | {"dry-run": False}
    words, options = _options(cmd, _tokens(cmd, text), known)
    if words in (["help"], ["usage"]) or (not words and not options):
        return Help(cmd)
    (target,) = _expect(cmd, words, 1, f"the VM (or {PRUNE_ALL})")
    return Prune(
        None if target == PRUNE_ALL else target,
        _keep(cmd, options),
        dry_run="dry-run" in options,
        scope=_scope(cmd, options),
    )
