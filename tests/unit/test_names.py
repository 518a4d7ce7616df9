from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.adapters.libvirt.xml import snapshot_xml
from core.domain.names import closest
from core.domain.snapshot import (
    LIBVIRT_NAME_PATTERN,
    label_for_external,
    libvirt_description,
    new_libvirt_name,
    split_libvirt_description,
    validate_label,
)
from core.errors import InvalidLabel


@pytest.mark.parametrize(
    ("label", "rule"),
    [
        ("", "empty"),
        ("a" * 65, "65 characters"),
        ("before upgrade", "space"),
        ("a/b", "'/'"),
        (".hidden", "'.'"),
        ("20251216", "all digits"),
        ("evil\u202eexe", "U+202E"),
        ("zero\u200bwidth", "U+200B"),
        ("nul\x00", "U+0000"),
        ("--desc", "'-'"),
    ],
)
def test_bad_labels_are_refused_with_the_rule(label: str, rule: str) -> None:
    with pytest.raises(InvalidLabel) as info:
        validate_label(label)
    assert rule in info.value.rule


@pytest.mark.parametrize(
    "label", ["before-upgrade-2025-12-16", "clean-install", "daily_20251216-0300", "Ünïcode-ok"]
)
def test_good_labels_pass(label: str) -> None:
    assert validate_label(label) == label


def test_labels_are_nfc_normalised() -> None:
    assert validate_label("cafe\u0301") == "caf\u00e9"


@given(st.text(max_size=200))
def test_any_accepted_label_is_safe(raw: str) -> None:
    try:
        label = validate_label(raw)
    except InvalidLabel:
        return
    assert 0 < len(label) <= 64
    assert "/" not in label
    assert not label.startswith(".")
    assert not label.isdigit()
    # Even a label full of markup round-trips through the snapshot XML as text only.
    root = ET.fromstring(snapshot_xml("sb-x", libvirt_description(label, "")))
    assert [c.tag for c in root] == ["name", "description"]
    assert split_libvirt_description(root.findtext("description") or "")[0] == label


def test_xml_metacharacters_cannot_add_elements() -> None:
    evil = "x</description><memory snapshot='external' file='/etc/passwd'/><description>"
    root = ET.fromstring(snapshot_xml("sb-abc", evil))
    assert root.find("memory") is None
    assert root.findtext("description") == evil


def test_generated_names_are_valid_unique_and_time_ordered() -> None:
    a = new_libvirt_name(now_ms=1_000, entropy=b"\x00" * 10)
    b = new_libvirt_name(now_ms=2_000, entropy=b"\x00" * 10)
    assert LIBVIRT_NAME_PATTERN.match(a)
    assert LIBVIRT_NAME_PATTERN.match(b)
    assert a < b
    assert len({new_libvirt_name() for _ in range(1000)}) == 1000


def test_external_snapshot_labels_are_cleaned_and_unique() -> None:
    assert label_for_external("nightly", set()) == "nightly"
    assert label_for_external("12345", set()) == "snap-12345"
    assert label_for_external("nightly", {"nightly"}) == "nightly~2"
    validate_label(label_for_external("has space/and slash", set()))


def test_closest_names_first() -> None:
    names = ["web-01", "web-02", "db-01", "mail"]
    assert closest("web-1", names)[:2] == ["web-01", "web-02"]
    assert closest("dbo1", names)[0] == "db-01"
    assert closest("x", []) == []
