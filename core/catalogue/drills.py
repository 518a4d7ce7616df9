"""``DrillStore`` on tortoise: the record of restore drills. A drill's row is written when it
starts (RUNNING: evidence for the sweep should snapbot die) and completed when it ends."""

from __future__ import annotations

from datetime import datetime, timedelta

from tortoise.transactions import in_transaction

from core.catalogue.models import DrillRow
from core.domain.drills import Drill, DrillResult, DrillSource, clip_error

# What a listing reads: everything but the screenshot (kept in its row, read on demand).
_LISTED = (
    "id",
    "vm_uuid",
    "vm_name",
    "label",
    "libvirt_name",
    "point_id",
    "source",
    "point_created_at",
    "started_at",
    "finished_at",
    "requested_by",
    "result",
    "ready_seconds",
    "error",
    "throwaway_name",
)


def _drill(values: dict[str, object]) -> Drill:
    def when(key: str) -> datetime:
        value = values[key]
        assert isinstance(value, datetime)
        return value

    finished = values["finished_at"]
    ready = values["ready_seconds"]
    return Drill(
        id=str(values["id"]),
        vm_uuid=str(values["vm_uuid"]),
        vm_name=str(values["vm_name"]),
        label=str(values["label"]),
        libvirt_name=str(values["libvirt_name"]),
        point_id=None if values["point_id"] is None else str(values["point_id"]),
        source=DrillSource(values["source"]),
        point_created_at=when("point_created_at"),
        started_at=when("started_at"),
        requested_by=str(values["requested_by"]),
        result=DrillResult(values["result"]),
        finished_at=finished if isinstance(finished, datetime) else None,
        ready_seconds=float(ready) if isinstance(ready, int | float) else None,
        error=None if values["error"] is None else str(values["error"]),
        throwaway_name=str(values["throwaway_name"]),
    )


class TortoiseDrills:
    async def begin_drill(self, drill: Drill, *, stale_after: timedelta) -> bool:
        async with in_transaction():
            running = await DrillRow.filter(
                vm_uuid=drill.vm_uuid,
                result=DrillResult.RUNNING.value,
                started_at__gt=drill.started_at - stale_after,
            ).exists()
            if running:
                return False
            await DrillRow.create(
                id=drill.id,
                vm_uuid=drill.vm_uuid,
                vm_name=drill.vm_name,
                label=drill.label,
                libvirt_name=drill.libvirt_name,
                point_id=drill.point_id,
                source=drill.source.value,
                point_created_at=drill.point_created_at,
                started_at=drill.started_at,
                requested_by=drill.requested_by,
                result=DrillResult.RUNNING.value,
                throwaway_name=drill.throwaway_name,
            )
        return True

    async def finish_drill(self, drill: Drill) -> None:
        await DrillRow.filter(id=drill.id).update(
            result=drill.result.value,
            finished_at=drill.finished_at,
            ready_seconds=drill.ready_seconds,
            error=None if drill.error is None else clip_error(drill.error),
            screenshot=drill.screenshot,
        )

    async def drills(self, vm_uuid: str | None = None, limit: int = 50) -> list[Drill]:
        query = DrillRow.all() if vm_uuid is None else DrillRow.filter(vm_uuid=vm_uuid)
        rows = await query.order_by("-started_at", "-id").limit(limit).values(*_LISTED)
        return [_drill(row) for row in rows]

    async def drill_screenshot(self, drill_id: str) -> bytes | None:
        row = await DrillRow.filter(id=drill_id).values_list("screenshot", flat=True)
        if not row or row[0] is None:
            return None
        return bytes(row[0])

    async def last_passed_drills(self) -> dict[str, Drill]:
        rows = (
            await DrillRow.filter(result=DrillResult.PASSED.value)
            .order_by("started_at", "id")
            .values(*_LISTED)
        )
        # Oldest first, so each VM's newest passing drill is the one kept.
        return {str(row["vm_uuid"]): _drill(row) for row in rows}

    async def abandon_drills(self, started_before: datetime, error: str) -> int:
        return await DrillRow.filter(
            result=DrillResult.RUNNING.value, started_at__lt=started_before
        ).update(result=DrillResult.FAILED.value, error=clip_error(error))
