"""The usage-sample part of the catalogue contract (``core.ports.UsageStore``), over every
backend of tests/contract/test_catalogue_backends.py: SQLite, PostgreSQL when configured, and
the in-memory catalogue."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from core.domain.usage import HISTORY_DAYS, SampleKind, UsageSample
from core.ports import UsageStore
from tests.contract import test_catalogue_backends as backends

# The suite's fixtures: a fresh catalogue of each backend per test, on a hand-moved clock.
catalogue = backends.catalogue
clock = backends.clock

DAY = date(2026, 3, 1)
VM_A = backends.VM_A
VM_B = backends.VM_B
BIG = 2**44  # 16 TiB: wider than a 32-bit column


def vm_sample(day: date, vm: str = VM_A, disk: int = BIG, name: str = "web-01") -> UsageSample:
    return UsageSample(
        day,
        SampleKind.VM,
        vm,
        name,
        disk_bytes=disk,
        memory_bytes=2**30,
        backup_bytes=None,
        logical_bytes=0,
    )


async def test_samples_round_trip_oldest_first(catalogue: UsageStore) -> None:
    fs = UsageSample(
        DAY,
        SampleKind.FILESYSTEM,
        "/var/lib/libvirt/images",
        "/var/lib/libvirt/images",
        used_bytes=None,
        free_bytes=BIG + 1,
    )
    store = UsageSample(
        DAY - timedelta(days=1),
        SampleKind.STORE,
        "/srv/backups",
        "/srv/backups",
        backup_bytes=123,
        logical_bytes=BIG,
        used_bytes=5,
        free_bytes=6,
    )
    await catalogue.record_usage([vm_sample(DAY), fs, store])
    assert await catalogue.usage_samples(DAY - timedelta(days=1)) == [
        store,
        fs,
        vm_sample(DAY),
    ]
    assert await catalogue.usage_samples(DAY, SampleKind.VM) == [vm_sample(DAY)]
    assert await catalogue.usage_samples(DAY, subject="/srv/backups") == []
    assert await catalogue.usage_samples(DAY + timedelta(days=1)) == []


async def test_a_second_sample_the_same_day_replaces_the_first(catalogue: UsageStore) -> None:
    await catalogue.record_usage([vm_sample(DAY, disk=1), vm_sample(DAY, VM_B, disk=7)])
    await catalogue.record_usage([vm_sample(DAY, disk=2, name="web-01-renamed")])
    await catalogue.record_usage([vm_sample(DAY + timedelta(days=1), disk=3)])
    found = await catalogue.usage_samples(DAY, SampleKind.VM, VM_A)
    assert [(s.day, s.disk_bytes, s.name) for s in found] == [
        (DAY, 2, "web-01-renamed"),
        (DAY + timedelta(days=1), 3, "web-01"),
    ]
    assert [s.disk_bytes for s in await catalogue.usage_samples(DAY, subject=VM_B)] == [7]


async def test_concurrent_samplers_of_the_same_day_leave_one_sample(
    catalogue: UsageStore,
) -> None:
    await asyncio.gather(*(catalogue.record_usage([vm_sample(DAY, disk=n)]) for n in range(6)))
    found = await catalogue.usage_samples(DAY)
    assert len(found) == 1
    assert found[0].disk_bytes in range(6)


async def test_old_samples_are_forgotten(catalogue: UsageStore) -> None:
    today = DAY + timedelta(days=HISTORY_DAYS + 10)
    days = [DAY, DAY + timedelta(days=10), DAY + timedelta(days=11), today]
    await catalogue.record_usage([vm_sample(d) for d in days])
    cutoff = today - timedelta(days=HISTORY_DAYS - 1)
    assert await catalogue.forget_usage_before(cutoff) == 2
    assert [s.day for s in await catalogue.usage_samples(DAY)] == days[2:]
    assert await catalogue.forget_usage_before(cutoff) == 0
