"""Restore drills (``/snapshot drill``, drills in schedules): one row per drill, its restore
point, how long the throwaway VM took to be ready, passed or failed and why, its screenshot. A
new table, nothing else changes."""

from __future__ import annotations

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0005_usage_samples")]

    initial = False

    operations = [
        ops.CreateModel(
            name="DrillRow",
            fields=[
                (
                    "id",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=16),
                ),
                ("vm_uuid", fields.CharField(db_index=True, max_length=36)),
                ("vm_name", fields.CharField(max_length=255)),
                ("label", fields.CharField(max_length=64)),
                ("libvirt_name", fields.CharField(max_length=255)),
                ("point_id", fields.CharField(null=True, max_length=64)),
                ("source", fields.CharField(max_length=16)),
                ("point_created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                (
                    "started_at",
                    fields.DatetimeField(db_index=True, auto_now=False, auto_now_add=False),
                ),
                (
                    "finished_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                ("requested_by", fields.CharField(max_length=255)),
                ("result", fields.CharField(db_index=True, max_length=16)),
                ("ready_seconds", fields.FloatField(null=True)),
                ("error", fields.TextField(null=True)),
                ("screenshot", fields.BinaryField(null=True)),
                ("throwaway_name", fields.CharField(max_length=255)),
            ],
            options={
                "table": "drill",
                "app": "snapbot",
                "pk_attr": "id",
                "table_description": "One restore drill (``core.domain.drills.Drill``): RUNNING while the throwaway VM is up,",
            },
            bases=["Model"],
        ),
    ]
