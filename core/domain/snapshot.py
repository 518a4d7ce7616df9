"""Snapshots: what libvirt holds, what the catalogue records, and the naming rules.

A snapshot has two names. The *libvirt name* (``sb-<ulid>``) is generated once and never
changes: libvirt reverts internal snapshots by that name (it is the qcow2 snapshot tag), so a
libvirt-level rename would break restore. The *label* is what people type and see; it lives in
the catalogue and can be renamed freely.
"""

from __future__ import annotations

import enum
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from datetime import datetime

from core.domain.names import lookalike
from core.errors import InvalidInput, InvalidLabel

LABEL_MAX_LENGTH = 64
# Descriptions are one line of prose shown under the snapshot in every listing; the catalogue's
# column and libvirt's <description> take far more, a listing does not.
DESCRIPTION_MAX_LENGTH = 500
LIBVIRT_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{2,39}$")

# Code points that reorder or hide text (Trojan Source, CVE-2021-42574) are all in category Cf;
# Cc are control characters, Cs lone surrogates, Co private use, Cn unassigned.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
# Format characters that reorder what is shown (Trojan Source, CVE-2021-42574). Other format
# characters stay allowed in descriptions: emoji sequences need the zero-width joiner.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


class SnapshotKind(enum.Enum):
    """Where a snapshot lives and what it holds.

    Every kind is a complete restore point on its own: none needs a parent."""

    # Internal to the VM's images: disk, memory and configuration, instant to take and revert,
    # but lost with the image.
    FULL = "full"
    # A restore point in the backup store (disks and configuration, no memory), outside the
    # image: survives a lost disk or a deleted VM.
    INCREMENTAL = "incremental"
    # A full snapshot whose disk state was moved to the backup store (its memory was not kept).
    ARCHIVED = "archived"

    @property
    def in_backup_store(self) -> bool:
        return self is not SnapshotKind.FULL


class Origin(enum.Enum):
    """How a snapshot came to be."""

    MANUAL = "manual"
    SCHEDULED = "scheduled"
    SAFETY = "safety"
    EXTERNAL = "external"


class CatalogueStatus(enum.Enum):
    """Whether libvirt still has the snapshot the catalogue records."""

    PRESENT = "present"
    MISSING = "missing"


class CapturedState(enum.Enum):
    """The VM's run state when the snapshot was taken."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUT_OFF = "shut off"


@dataclass(frozen=True, slots=True)
class HypervisorSnapshot:
    """A snapshot as libvirt reports it."""

    libvirt_name: str
    created_at: datetime
    captured_state: CapturedState
    has_memory: bool
    description: str
    parent: str | None
    is_current: bool
    is_external: bool


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot as the catalogue records it."""

    vm_uuid: str
    vm_name: str
    libvirt_name: str
    label: str
    description: str
    kind: SnapshotKind
    captured_state: CapturedState
    has_memory: bool
    created_at: datetime
    created_by: str
    origin: Origin
    status: CatalogueStatus
    memory_bytes: int | None
    held: bool = False
    hold: Hold | None = None
    # Which hypervisor the VM lives on (None: recorded before snapbot kept it): a sync judges
    # only its own host's records.
    host_uuid: str | None = None
    hypervisor_uri: str | None = None
    # For kinds in the backup store: the restore point's id there, the bytes its disks hold
    # (logical size) and the bytes of data the store did not hold before it (what it added).
    point_id: str | None = None
    logical_bytes: int | None = None
    added_bytes: int | None = None
    # What the last verification found damaged (None: nothing known to be).
    damage: str | None = None
    # How consistent the disks were when read: "frozen" (guest filesystems frozen through its
    # agent), "crash-consistent" (as after a power cut), "shut off".
    consistency: str | None = None


class HoldKind(enum.Enum):
    """Why a snapshot is kept whatever the retention policy says."""

    UNTIL = "until"  # until a date
    VERIFIED = "verified"  # until its creator says the change it guards is verified
    INDEFINITE = "indefinite"  # until released


@dataclass(frozen=True, slots=True)
class Hold:
    kind: HoldKind
    until: datetime | None = None
    reminded_at: datetime | None = None

    def describe(self) -> str:
        if self.kind is HoldKind.UNTIL and self.until is not None:
            return f"held until {self.until:%Y-%m-%d %H:%M} UTC"
        if self.kind is HoldKind.VERIFIED:
            return "held until verified"
        return "held"


def validate_label(raw: str) -> str:
    """Return the NFC form of a snapshot label, or raise ``InvalidLabel`` naming the rule broken.

    The rules keep labels typeable in Slack and a terminal, unambiguous on screen, and safe if
    they ever reach a file name.
    """
    label = unicodedata.normalize("NFC", raw)
    if not label:
        raise InvalidLabel(raw, "it is empty")
    if len(label) > LABEL_MAX_LENGTH:
        raise InvalidLabel(
            raw, f"it is {len(label)} characters long; the limit is {LABEL_MAX_LENGTH}"
        )
    for char in label:
        if unicodedata.category(char) in _FORBIDDEN_CATEGORIES:
            raise InvalidLabel(
                raw, f"it contains the invisible or control character U+{ord(char):04X}"
            )
        if char.isspace():
            raise InvalidLabel(raw, "it contains a space; use - or _ instead")
    if "/" in label:
        raise InvalidLabel(raw, "it contains '/'")
    if label.startswith("."):
        raise InvalidLabel(raw, "it starts with '.'")
    if label.isdigit():
        raise InvalidLabel(raw, "it is all digits; add a word, e.g. 'daily-" + label + "'")
    if label.startswith("-"):
        raise InvalidLabel(raw, "it starts with '-', which reads as an option")
    return label


def validate_description(raw: str) -> str:
    """Return the NFC form of a snapshot description, or raise ``InvalidInput`` naming what is
    wrong and how to write it instead."""
    description = unicodedata.normalize("NFC", raw) if is_encodable(raw) else raw
    for char in description:
        category = unicodedata.category(char)
        if category == "Cs":
            raise InvalidInput(
                f"the description contains a broken character (a lone UTF-16 surrogate "
                f"U+{ord(char):04X}); type it again or copy it from a plain-text source"
            )
        if category == "Cc":
            what = "a line break" if char in "\r\n" else f"the control character U+{ord(char):04X}"
            raise InvalidInput(
                f"the description contains {what}; write it on one line, without control characters"
            )
        if char in _BIDI_CONTROLS:
            raise InvalidInput(
                f"the description contains the invisible direction control U+{ord(char):04X}, "
                "which can make text display differently from what it says; remove it"
            )
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise InvalidInput(
            f"the description is {len(description)} characters long; the limit is "
            f"{DESCRIPTION_MAX_LENGTH}. Keep the details elsewhere and say where"
        )
    return description


def is_encodable(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (a lone surrogate cannot: libvirt and the
    database would fail on it rather than answer)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_BACKUP_NAME_PREFIX = "pt-"


def backup_libvirt_name(point_id: str) -> str:
    """The catalogue key of a restore point in the backup store (libvirt never sees it):
    ``pt-`` and the point id in lower case, so it sorts by time like ``sb-`` names."""
    name = _BACKUP_NAME_PREFIX + point_id.lower()
    assert LIBVIRT_NAME_PATTERN.match(name), name
    return name


def new_libvirt_name(now_ms: int | None = None, entropy: bytes | None = None) -> str:
    """Generate a libvirt snapshot name: ``sb-`` and a lowercase ULID (time-ordered, unique)."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    rand = os.urandom(10) if entropy is None else entropy
    value = (millis << 80) | int.from_bytes(rand, "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    name = "sb-" + "".join(reversed(chars))
    assert LIBVIRT_NAME_PATTERN.match(name), name
    return name


def is_generated_name(name: str) -> bool:
    """True for names snapbot generated, as opposed to snapshots made with virsh and the like."""
    return name.startswith("sb-") and LIBVIRT_NAME_PATTERN.match(name) is not None


def label_for_external(libvirt_name: str, taken: set[str]) -> str:
    """Choose a label for a snapshot made outside snapbot: its own name when that is a valid label,
    otherwise a cleaned-up form, made distinct from every label in ``taken`` (look-alikes
    included)."""
    try:
        base = validate_label(libvirt_name)
    except InvalidLabel:
        cleaned = "".join(c if (c.isalnum() or c in "-_.:+") else "-" for c in libvirt_name).strip(
            "-."
        )
        base = cleaned[: LABEL_MAX_LENGTH - 8] or "snapshot"
        if base.isdigit():
            base = "snap-" + base
    label, n = base, 2
    while lookalike(label, taken) is not None:
        label = f"{base[: LABEL_MAX_LENGTH - 6]}~{n}"
        n += 1
    return label


_LABEL_PREFIX = "snapbot label: "


def libvirt_description(label: str, description: str) -> str:
    """The ``<description>`` snapbot writes into libvirt: the label first, so a lost catalogue
    can be rebuilt from libvirt alone, then the user's description."""
    return _LABEL_PREFIX + label + ("\n" + description if description else "")


def split_libvirt_description(text: str) -> tuple[str | None, str]:
    """Inverse of ``libvirt_description``: (label or None, user description)."""
    first, _, rest = text.partition("\n")
    if first.startswith(_LABEL_PREFIX):
        return first[len(_LABEL_PREFIX) :], rest
    return None, text
