"""Storage facts read through libvirt (core/adapters/libvirt/storage.py) on libvirt's test
driver: which pool a disk's snapshot lands in and its room, and what is said when libvirt
cannot tell. The real remote host is in tests/system/test_remote_host.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from core.adapters.libvirt import storage
from core.domain.vm import Disk, DiskFormat

GIB = 2**30


def disk(path: str | None, *, source_type: str = "file", target: str = "vdz") -> Disk:
    return Disk(target, path, DiskFormat.QCOW2, "qcow2", False, source_type)


@pytest.fixture
def conn() -> Iterator[Any]:
    c = libvirt.open("test:///default")
    yield c
    c.close()


@pytest.fixture
def pool(conn: Any) -> Iterator[tuple[Any, str]]:
    """A running directory pool of its own (the test driver touches no real directory)."""
    name = f"p{uuid.uuid4().hex[:8]}"
    directory = f"/images-{name}"
    made = conn.storagePoolDefineXML(
        f"<pool type='dir'><name>{name}</name><target><path>{directory}</path></target></pool>"
    )
    made.create(0)
    yield made, directory
    if made.isActive():
        for vol in made.listAllVolumes(0):
            vol.delete(0)
        made.destroy()
    made.undefine()


def test_a_volume_of_a_pool_measures_that_pools_room(conn: Any, pool: tuple[Any, str]) -> None:
    made, directory = pool
    made.createXML(
        "<volume><name>a.qcow2</name><capacity unit='G'>1</capacity>"
        "<allocation unit='M'>3</allocation></volume>",
        0,
    )
    dom = conn.lookupByName("test")
    key, where, free, why = storage.measure_place(conn, dom, disk(f"{directory}/a.qcow2"))
    assert (key, where, why) == (f"pool:{made.name()}", f"storage pool {made.name()}", None)
    assert free == made.info()[3]
    # A disk libvirt's block info cannot open: the volume's allocation answers.
    assert storage.allocation(conn, dom, disk(f"{directory}/a.qcow2")) == 3 * 2**20


def test_an_image_the_pool_has_not_listed_yet_is_measured_by_its_directory(
    conn: Any, pool: tuple[Any, str]
) -> None:
    made, directory = pool
    dom = conn.lookupByName("test")
    _key, where, free, why = storage.measure_place(conn, dom, disk(f"{directory}/new.qcow2"))
    assert where == f"storage pool {made.name()}"
    assert free is not None
    assert why is None


def test_a_stopped_pool_is_named_with_how_to_start_it(conn: Any, pool: tuple[Any, str]) -> None:
    made, directory = pool
    made.destroy()
    dom = conn.lookupByName("test")
    _key, where, free, why = storage.measure_place(conn, dom, disk(f"{directory}/a.qcow2"))
    assert where == f"storage pool {made.name()}"
    assert free is None
    assert why == f"storage pool {made.name()} is not active (virsh pool-start {made.name()})"


def test_what_libvirt_cannot_see_is_said_plainly(conn: Any) -> None:
    dom = conn.lookupByName("test")
    key, where, free, why = storage.measure_place(conn, dom, disk("/nowhere/x.qcow2"))
    assert (key, where, free) == ("dir:/nowhere", "/nowhere", None)
    assert why is not None
    assert "no libvirt storage pool of this remote host holds it" in why
    assert "a directory pool over /nowhere" in why
    _k, where, free, why = storage.measure_place(
        conn, dom, disk("rbd/image", source_type="network", target="vdb")
    )
    assert (where, free) == ("network disk vdb", None)
    assert why == "a network disk's free space is not visible to libvirt"
    # Neither block info nor a volume: unknown, not zero.
    assert storage.allocation(conn, dom, disk("/nowhere/x.qcow2")) is None
