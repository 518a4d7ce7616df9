"""``UsageStore`` on tortoise: daily storage-usage samples, one per (day, kind, subject)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from tortoise.exceptions import IntegrityError

from core.catalogue.models import UsageSampleRow
from core.domain.usage import SampleKind, UsageSample

_VALUES = ("name", "disk_bytes", "memory_bytes", "backup_bytes", "logical_bytes")
_SPACE = ("used_bytes", "free_bytes")


def _values(sample: UsageSample) -> dict[str, Any]:
    return {field: getattr(sample, field) for field in (*_VALUES, *_SPACE)}


def _sample(row: UsageSampleRow) -> UsageSample:
    return UsageSample(
        day=row.sampled_on,
        kind=SampleKind(row.kind),
        subject=row.subject,
        name=row.name,
        disk_bytes=row.disk_bytes,
        memory_bytes=row.memory_bytes,
        backup_bytes=row.backup_bytes,
        logical_bytes=row.logical_bytes,
        used_bytes=row.used_bytes,
        free_bytes=row.free_bytes,
    )


class TortoiseUsage:
    async def record_usage(self, samples: Sequence[UsageSample]) -> None:
        for sample in samples:
            key = {"sampled_on": sample.day, "kind": sample.kind.value, "subject": sample.subject}
            values = _values(sample)
            if await UsageSampleRow.filter(**key).update(**values):
                continue
            try:
                await UsageSampleRow.create(
                    sampled_on=sample.day, kind=sample.kind.value, subject=sample.subject, **values
                )
            except IntegrityError:
                # Another process sampled the same day meanwhile: the later write wins.
                await UsageSampleRow.filter(**key).update(**values)

    async def usage_samples(
        self, since: date, kind: SampleKind | None = None, subject: str | None = None
    ) -> list[UsageSample]:
        query = UsageSampleRow.filter(sampled_on__gte=since)
        if kind is not None:
            query = query.filter(kind=kind.value)
        if subject is not None:
            query = query.filter(subject=subject)
        rows = await query.order_by("sampled_on", "kind", "subject")
        return [_sample(row) for row in rows]

    async def forget_usage_before(self, day: date) -> int:
        return int(await UsageSampleRow.filter(sampled_on__lt=day).delete())
