"""Daily storage-usage samples of each VM, the backup store and each filesystem involved
(``/snapshot usage`` history, its chart and forecasts): a new table, nothing else changes."""

from __future__ import annotations

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("snapbot", "0004_schedule_task")]

    initial = False

    operations = [
        ops.CreateModel(
            name="UsageSampleRow",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("sampled_on", fields.DateField(db_index=True)),
                ("kind", fields.CharField(max_length=16)),
                ("subject", fields.CharField(max_length=255)),
                ("name", fields.CharField(max_length=255)),
                ("disk_bytes", fields.BigIntField(null=True)),
                ("memory_bytes", fields.BigIntField(null=True)),
                ("backup_bytes", fields.BigIntField(null=True)),
                ("logical_bytes", fields.BigIntField(null=True)),
                ("used_bytes", fields.BigIntField(null=True)),
                ("free_bytes", fields.BigIntField(null=True)),
            ],
            options={
                "table": "usage_sample",
                "app": "snapbot",
                "unique_together": (("sampled_on", "kind", "subject"),),
                "pk_attr": "id",
                "table_description": "One day's storage usage of a VM, the backup store or a filesystem",
            },
            bases=["Model"],
        ),
    ]
