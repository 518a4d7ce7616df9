"""Which hypervisor a snapshot record belongs to: a VM's UUID is unique only within one host."""

from __future__ import annotations

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0001_release_0_1")]

    initial = False

    operations = [
        ops.AddField(
            model_name="SnapshotRow",
            name="host_uuid",
            field=fields.CharField(null=True, max_length=36),
        ),
        ops.AddField(
            model_name="SnapshotRow",
            name="hypervisor_uri",
            field=fields.CharField(null=True, max_length=255),
        ),
    ]
