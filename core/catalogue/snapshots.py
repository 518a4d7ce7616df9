"""``SnapshotStore`` and ``HoldStore`` on tortoise: the snapshot records and their holds."""

from __future__ import annotations

from collections.abc import Collection

from tortoise import connections
from tortoise.expressions import Q
from tortoise.functions import Count

from core.catalogue.models import SnapshotRow
from core.domain.snapshot import (
    CapturedState,
    CatalogueStatus,
    Hold,
    HoldKind,
    Origin,
    Snapshot,
    SnapshotKind,
)
from core.ports import SnapshotTally

# One pass over the table, summed per VM by the database (the Home tab's overview). The values
# compared with are this module's own constants, never input. FILTER: SQLite 3.30+, PostgreSQL.
_PRESENT = f"status = '{CatalogueStatus.PRESENT.value}'"
_FULL = f"{_PRESENT} AND kind = '{SnapshotKind.FULL.value}'"
_TALLIES = f"""
SELECT vm_uuid, MAX(vm_name) AS vm_name,{{damaged}}
  COUNT(*) FILTER (WHERE {_PRESENT}) AS present,
  COUNT(*) FILTER (WHERE status = '{CatalogueStatus.MISSING.value}') AS missing,
  COUNT(*) FILTER (WHERE held) AS held,
  COUNT(*) FILTER (WHERE {_FULL}) AS full_present,
  SUM(memory_bytes) FILTER (WHERE {_FULL}) AS memory_bytes
FROM snapshot GROUP BY vm_uuid
"""
# SQLite: the columns above are all in one index (migration 0007), damage is not (it is free
# text), so damaged records are counted apart, from an index of their own. PostgreSQL reads the
# table whatever the index (an index-only scan needs pages its vacuum has marked), so it counts
# them in the same pass.
_DAMAGED = "SELECT vm_uuid, COUNT(*) AS n FROM snapshot WHERE damage IS NOT NULL GROUP BY vm_uuid"

# Each VM's newest records: ranked within the VM by the database on the few columns ranking
# needs (SQLite: from the snapshot_newest index), then only the rows kept are read whole.
_NEWEST = """
SELECT s.*, r.rank_ FROM snapshot AS s JOIN (
  SELECT id, ROW_NUMBER() OVER (PARTITION BY vm_uuid ORDER BY created_at DESC, id DESC) AS rank_
  FROM snapshot WHERE vm_uuid IN ({marks})
) AS r ON s.id = r.id WHERE r.rank_ <= ? ORDER BY s.vm_uuid, r.rank_
"""
# PostgreSQL: each VM's first rows in the snapshot_newest index, VM by VM, whatever the
# planner's statistics say (right after a bulk load they made it read the whole table).
_NEWEST_POSTGRES = """
SELECT s.* FROM unnest($1::text[]) AS v(uuid) CROSS JOIN LATERAL (
  SELECT * FROM snapshot WHERE vm_uuid = v.uuid ORDER BY created_at DESC, id DESC LIMIT $2
) AS s ORDER BY s.vm_uuid, s.created_at DESC, s.id DESC
"""


def _snapshot(row: SnapshotRow) -> Snapshot:
    return Snapshot(
        vm_uuid=row.vm_uuid,
        vm_name=row.vm_name,
        libvirt_name=row.libvirt_name,
        label=row.label,
        description=row.description,
        kind=SnapshotKind(row.kind),
        captured_state=CapturedState(row.captured_state),
        has_memory=row.has_memory,
        created_at=row.created_at,
        created_by=row.created_by,
        origin=Origin(row.origin),
        status=CatalogueStatus(row.status),
        memory_bytes=row.memory_bytes,
        held=row.held,
        hold=None
        if row.hold_kind is None
        else Hold(HoldKind(row.hold_kind), row.hold_until, row.hold_reminded_at),
        host_uuid=row.host_uuid,
        hypervisor_uri=row.hypervisor_uri,
        point_id=row.point_id,
        logical_bytes=row.logical_bytes,
        added_bytes=row.added_bytes,
        damage=row.damage,
        consistency=row.consistency,
    )


class TortoiseSnapshots:
    async def snapshots(self, vm_uuid: str | None = None) -> list[Snapshot]:
        query = SnapshotRow.all() if vm_uuid is None else SnapshotRow.filter(vm_uuid=vm_uuid)
        rows = await query.order_by("created_at", "id")
        return [_snapshot(r) for r in rows]

    async def snapshot_counts(self) -> dict[str, int]:
        rows = (
            await SnapshotRow.filter(status=CatalogueStatus.PRESENT.value)
            .annotate(count=Count("id"))
            .group_by("vm_uuid")
            .values_list("vm_uuid", "count")
        )
        return {str(vm_uuid): int(count) for vm_uuid, count in rows}

    async def snapshot_tallies(self) -> dict[str, SnapshotTally]:
        conn = connections.get("default")
        damaged: dict[str, int] = {}
        if conn.capabilities.dialect == "postgres":
            rows = await conn.execute_query_dict(
                _TALLIES.format(damaged=" COUNT(damage) AS damaged,")
            )
            damaged = {str(r["vm_uuid"]): int(r["damaged"]) for r in rows}
        else:
            rows = await conn.execute_query_dict(_TALLIES.format(damaged=""))
            for r in await conn.execute_query_dict(_DAMAGED):
                damaged[str(r["vm_uuid"])] = int(r["n"])
        return {
            str(r["vm_uuid"]): SnapshotTally(
                vm_name=str(r["vm_name"]),
                present=int(r["present"] or 0),
                missing=int(r["missing"] or 0),
                damaged=damaged.get(str(r["vm_uuid"]), 0),
                held=int(r["held"] or 0),
                full=int(r["full_present"] or 0),
                memory_bytes=int(r["memory_bytes"] or 0),
            )
            for r in rows
        }

    async def newest_snapshots(
        self, vm_uuids: Collection[str], per_vm: int
    ) -> dict[str, list[Snapshot]]:
        uuids = sorted(set(vm_uuids))
        if not uuids or per_vm <= 0:
            return {}
        conn = connections.get("default")
        if conn.capabilities.dialect == "postgres":
            rows = await conn.execute_query_dict(_NEWEST_POSTGRES, [uuids, int(per_vm)])
        else:
            query = _NEWEST.format(marks=", ".join("?" for _ in uuids))
            rows = await conn.execute_query_dict(query, [*uuids, int(per_vm)])
        newest: dict[str, list[Snapshot]] = {}
        for row in rows:
            row.pop("rank_", None)
            # as tortoise itself makes a row's model from a query's columns (types converted)
            record = _snapshot(SnapshotRow._init_from_db(**row))
            newest.setdefault(record.vm_uuid, []).append(record)
        return newest

    async def add_snapshot(self, snapshot: Snapshot) -> None:
        await SnapshotRow.create(
            vm_uuid=snapshot.vm_uuid,
            vm_name=snapshot.vm_name,
            libvirt_name=snapshot.libvirt_name,
            label=snapshot.label,
            description=snapshot.description,
            kind=snapshot.kind.value,
            captured_state=snapshot.captured_state.value,
            has_memory=snapshot.has_memory,
            created_at=snapshot.created_at,
            created_by=snapshot.created_by,
            origin=snapshot.origin.value,
            status=snapshot.status.value,
            memory_bytes=snapshot.memory_bytes,
            held=snapshot.held,
            hold_kind=snapshot.hold.kind.value if snapshot.hold else None,
            hold_until=snapshot.hold.until if snapshot.hold else None,
            host_uuid=snapshot.host_uuid,
            hypervisor_uri=snapshot.hypervisor_uri,
            point_id=snapshot.point_id,
            logical_bytes=snapshot.logical_bytes,
            added_bytes=snapshot.added_bytes,
            damage=snapshot.damage,
            consistency=snapshot.consistency,
        )

    async def claim_host(self, vm_uuid: str, host_uuid: str, hypervisor_uri: str) -> None:
        # Only rows that need it: a listing syncs every VM, and most already say this host.
        await SnapshotRow.filter(
            Q(host_uuid__isnull=True) | Q(host_uuid__not=host_uuid), vm_uuid=vm_uuid
        ).update(host_uuid=host_uuid, hypervisor_uri=hypervisor_uri)

    async def relabel_snapshot(self, vm_uuid: str, libvirt_name: str, label: str) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(label=label)

    async def set_snapshot_status(
        self, vm_uuid: str, libvirt_name: str, status: CatalogueStatus
    ) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(
            status=status.value
        )

    async def set_memory_bytes(self, vm_uuid: str, libvirt_name: str, size: int | None) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(
            memory_bytes=size
        )

    async def set_backup_damage(self, vm_uuid: str, libvirt_name: str, damage: str | None) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(damage=damage)

    async def archive_snapshot(
        self,
        vm_uuid: str,
        libvirt_name: str,
        *,
        point_id: str,
        logical_bytes: int,
        added_bytes: int,
    ) -> None:
        # Only a full snapshot is archived: a second call (a retried archive) or a row of
        # another kind is left as it is instead of being overwritten with another point.
        await SnapshotRow.filter(
            vm_uuid=vm_uuid, libvirt_name=libvirt_name, kind=SnapshotKind.FULL.value
        ).update(
            kind=SnapshotKind.ARCHIVED.value,
            has_memory=False,
            memory_bytes=None,
            point_id=point_id,
            logical_bytes=logical_bytes,
            added_bytes=added_bytes,
        )

    async def remove_snapshot(self, vm_uuid: str, libvirt_name: str) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).delete()

    async def set_hold(self, vm_uuid: str, libvirt_name: str, hold: Hold | None) -> None:
        await SnapshotRow.filter(vm_uuid=vm_uuid, libvirt_name=libvirt_name).update(
            held=hold is not None,
            hold_kind=hold.kind.value if hold else None,
            hold_until=hold.until if hold else None,
            hold_reminded_at=hold.reminded_at if hold else None,
        )
