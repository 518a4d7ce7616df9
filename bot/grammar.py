"""The command grammar shared by every front end (the console now, Slack next).

A command is the slash command's name and its text, exactly as Slack delivers them; the console
reads whole lines and splits off the name. Parsing is pure: it returns a command value or raises
``UsageError`` naming the command whose usage to show.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

SNAPSHOT = "snapshot"
RESTORE = "restore"
PRUNE = "prune"
COMMANDS = (SNAPSHOT, RESTORE, PRUNE)
PRUNE_ALL = "all"
# The retention options of /prune, in the order the rules apply.
KEEP_OPTIONS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")

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
    """``label`` None: the front end lets the user pick one of the VM's snapshots."""

    vm: str
    label: str | None
    safety_snapshot: bool


@dataclass(frozen=True, slots=True)
class Prune:
    """``vm`` None means every VM. ``keep`` maps rule names (``KEEP_OPTIONS``) to counts;
    empty means "the VM's configured policy"."""

    vm: str | None
    keep: tuple[tuple[str, int], ...]
    dry_run: bool


Command = (
    Help
    | ListVms
    | ListSnapshots
    | CreateSnapshot
    | DeleteSnapshot
    | RenameSnapshot
    | Restore
    | Prune
)


def _tokens(command: str, text: str) -> list[str]:
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
                raise UsageError(command, f"unknown option --{name}")
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


def _expect(command: str, words: list[str], count: int, what: str) -> list[str]:
    if len(words) < count:
        raise UsageError(command, f"missing {what}")
    if len(words) > count:
        extra = " ".join(words[count:])
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
    raise UsageError(None, f"unknown command /{name}")


def parse_line(line: str) -> Command:
    """Parse a console line: ``/snapshot web-01 before-upgrade``."""
    head, _, rest = line.strip().partition(" ")
    if not head.startswith("/"):
        raise UsageError(None, f"commands start with /, e.g. /{SNAPSHOT} help")
    return parse(head, rest)


def _parse_snapshot(text: str) -> Command:
    cmd = SNAPSHOT
    words, options = _options(cmd, _tokens(cmd, text), {"desc": True, "description": True})
    description = options.get("desc", options.get("description", ""))
    if not words:
        if options:
            raise UsageError(cmd, "missing the VM and the snapshot name")
        return Help(cmd)
    sub, rest = words[0], words[1:]
    if sub in ("help", "usage") and not rest:
        return Help(cmd)
    if description and sub in ("list", "vms", "delete", "rename"):
        raise UsageError(cmd, f"--desc only goes with creating a snapshot, not with {sub}")
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
    if sub == "create":
        words = rest
    vm, label = _expect(cmd, words, 2, "the VM and the snapshot name")
    return CreateSnapshot(vm, label, description)


def _parse_restore(text: str) -> Command:
    cmd = RESTORE
    words, options = _options(cmd, _tokens(cmd, text), {"no-safety-snapshot": False})
    if words in (["help"], ["usage"]) or (not words and not options):
        return Help(cmd)
    safety = "no-safety-snapshot" not in options
    if len(words) == 1:
        return Restore(words[0], None, safety_snapshot=safety)
    vm, label = _expect(cmd, words, 2, "the VM and the snapshot name")
    return Restore(vm, label, safety_snapshot=safety)


def _parse_prune(text: str) -> Command:
    cmd = PRUNE
    known = {f"keep-{rule}": True for rule in KEEP_OPTIONS} | {"dry-run": False}
    words, options = _options(cmd, _tokens(cmd, text), known)
    if words in (["help"], ["usage"]) or (not words and not options):
        return Help(cmd)
    (target,) = _expect(cmd, words, 1, f"the VM (or {PRUNE_ALL})")
    keep: list[tuple[str, int]] = []
    for rule in KEEP_OPTIONS:
        value = options.get(f"keep-{rule}")
        if value is None:
            continue
        if not value.isdigit():
            raise UsageError(cmd, f"--keep-{rule} needs a whole number, not {value!r}")
        keep.append((rule, int(value)))
    return Prune(None if target == PRUNE_ALL else target, tuple(keep), dry_run="dry-run" in options)
