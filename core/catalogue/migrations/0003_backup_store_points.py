"""Restore points in the backup store: their id there, their sizes, what a verification found
damaged and how consistent their disks were when read (kinds "incremental" and "archived")."""

from __future__ import annotations

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0002_snapshot_hypervisor")]

    initial = False

    operations = [
        ops.AddField(
            model_name="SnapshotRow",
            name="added_bytes",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="SnapshotRow",
            name="consistency",
            field=fields.CharField(null=True, max_length=32),
        ),
        ops.AddField(
            model_name="SnapshotRow",
            name="damage",
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name="SnapshotRow",
            name="logical_bytes",
            field=fields.BigIntField(null=True),
        ),
        ops.AddField(
            model_name="SnapshotRow",
            name="point_id",
            field=fields.CharField(null=True, max_length=64),
        ),
    ]
