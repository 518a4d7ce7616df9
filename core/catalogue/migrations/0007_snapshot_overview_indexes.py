"""Indexes for the Home tab's overview (issue 12), nothing else changes: each VM's records
summed (``snapshot_tallies``) from an index holding every column the sums read, so the database
does not read 100,000 rows for them; restore points marked damaged found without a scan; a
VM's newest records ranked from an index in time order (``newest_snapshots``).

Plain SQL both SQLite and PostgreSQL take as written (a partial index included); the models do
not declare them, so tortoise's own schema and its change detection are as before.
"""

from __future__ import annotations

from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0006_drills")]

    initial = False

    operations = [
        ops.RunSQL(
            "CREATE INDEX IF NOT EXISTS snapshot_tally "
            "ON snapshot (vm_uuid, status, kind, held, memory_bytes, vm_name)",
            "DROP INDEX IF EXISTS snapshot_tally",
        ),
        ops.RunSQL(
            "CREATE INDEX IF NOT EXISTS snapshot_damaged ON snapshot (vm_uuid) "
            "WHERE damage IS NOT NULL",
            "DROP INDEX IF EXISTS snapshot_damaged",
        ),
        ops.RunSQL(
            "CREATE INDEX IF NOT EXISTS snapshot_newest ON snapshot (vm_uuid, created_at, id)",
            "DROP INDEX IF EXISTS snapshot_newest",
        ),
    ]
