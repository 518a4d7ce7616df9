"""A migration whose first step works and whose second the database refuses."""

from __future__ import annotations

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0002_snapshot_hypervisor")]  # noqa: RUF012

    operations = [  # noqa: RUF012
        ops.AddField(model_name="SnapshotRow", name="doomed", field=fields.IntField(null=True)),
        ops.RunSQL('ALTER TABLE "snapshot" ADD COLUMN "label" TEXT'),  # "label" exists
    ]
