"""What a schedule does (full snapshots, incremental ones into the backup store, or
verification of the store), and whether its retention archives full snapshots instead of
deleting them. Existing schedules keep taking full snapshots."""

from __future__ import annotations

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0003_backup_store_points")]

    initial = False

    operations = [
        ops.AddField(
            model_name="ScheduleRow",
            name="archive",
            field=fields.BooleanField(null=True),
        ),
        ops.AddField(
            model_name="ScheduleRow",
            name="task",
            field=fields.CharField(null=True, max_length=16),
        ),
    ]
