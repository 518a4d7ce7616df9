"""The schema release 0.1 made with generate_schemas (git 4865945): the baseline.

A catalogue from that release has these tables and no migration record; ``core.catalogue.db``
recognises it and records this migration as applied without running it. Never edit it.
"""

from __future__ import annotations

import functools
from json import dumps, loads

from tortoise import fields, migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name="ConfirmationRow",
            fields=[
                (
                    "id",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32),
                ),
                ("kind", fields.CharField(max_length=16)),
                ("requested_by", fields.CharField(max_length=255)),
                ("team", fields.CharField(null=True, max_length=64)),
                ("channel", fields.CharField(null=True, max_length=64)),
                ("vm_name", fields.CharField(null=True, max_length=255)),
                (
                    "payload",
                    fields.JSONField(
                        default=dict,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("used_at", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ("used_by", fields.CharField(null=True, max_length=255)),
            ],
            options={
                "table": "confirmation",
                "app": "snapbot",
                "pk_attr": "id",
                "table_description": "A pending or used confirmation. ``used_at`` is set exactly once, by a conditional update.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="LeaseRow",
            fields=[
                (
                    "name",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64),
                ),
                ("holder", fields.CharField(max_length=255)),
                ("expires_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("token", fields.BigIntField()),
            ],
            options={
                "table": "lease",
                "app": "snapbot",
                "pk_attr": "name",
                "table_description": "Leadership among bot processes sharing one database: the holder runs the schedules",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="OperationRow",
            fields=[
                (
                    "id",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=32),
                ),
                ("kind", fields.CharField(max_length=16)),
                ("vm_uuid", fields.CharField(db_index=True, max_length=36)),
                ("vm_name", fields.CharField(max_length=255)),
                ("requested_by", fields.CharField(max_length=255)),
                ("via", fields.CharField(max_length=32)),
                ("team", fields.CharField(null=True, max_length=64)),
                ("channel", fields.CharField(null=True, max_length=64)),
                ("status", fields.CharField(db_index=True, max_length=16)),
                ("started_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                (
                    "finished_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                ("snapshot_label", fields.CharField(null=True, max_length=255)),
                ("libvirt_name", fields.CharField(null=True, max_length=255)),
                ("stage", fields.CharField(null=True, max_length=32)),
                ("error", fields.TextField(null=True, unique=False)),
                ("outcome", fields.TextField(null=True, unique=False)),
                (
                    "details",
                    fields.JSONField(
                        default=dict,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
            ],
            options={
                "table": "operation",
                "app": "snapbot",
                "pk_attr": "id",
                "table_description": "One operation: the audit trail. Never deleted.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ScheduleRow",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("name", fields.CharField(unique=True, max_length=40)),
                ("vms", fields.CharField(max_length=255)),
                ("cadence", fields.CharField(max_length=16)),
                ("minute", fields.CharField(max_length=64)),
                ("hour", fields.CharField(max_length=64)),
                ("day", fields.CharField(max_length=64)),
                ("month", fields.CharField(max_length=64)),
                ("day_of_week", fields.CharField(max_length=64)),
                ("timezone", fields.CharField(max_length=64)),
                (
                    "policy",
                    fields.JSONField(
                        null=True,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
                ("channel", fields.CharField(null=True, max_length=64)),
                ("owner", fields.CharField(max_length=255)),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("grace_seconds", fields.IntField()),
                ("enabled", fields.BooleanField(default=True)),
                ("last_fire", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "schedule",
                "app": "snapbot",
                "pk_attr": "id",
                "table_description": "A schedule: the source of truth the scheduler's jobs are rebuilt from.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="ScheduleRunRow",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("schedule_id", fields.IntField(db_index=True)),
                ("fire_time", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("owner", fields.CharField(max_length=255)),
                ("started_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                (
                    "finished_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
                ("status", fields.CharField(max_length=16)),
                (
                    "report",
                    fields.JSONField(
                        default=dict,
                        encoder=functools.partial(dumps, separators=(",", ":")),
                        decoder=loads,
                    ),
                ),
            ],
            options={
                "table": "schedule_run",
                "app": "snapbot",
                "unique_together": (("schedule_id", "fire_time"),),
                "pk_attr": "id",
                "table_description": "One run of a schedule. Unique per (schedule, fire time): of two processes that both try",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="SnapshotRow",
            fields=[
                (
                    "id",
                    fields.IntField(generated=True, primary_key=True, unique=True, db_index=True),
                ),
                ("vm_uuid", fields.CharField(db_index=True, max_length=36)),
                ("vm_name", fields.CharField(max_length=255)),
                ("libvirt_name", fields.CharField(max_length=255)),
                ("label", fields.CharField(max_length=64)),
                ("description", fields.TextField(default="", unique=False)),
                ("kind", fields.CharField(max_length=16)),
                ("captured_state", fields.CharField(max_length=16)),
                ("has_memory", fields.BooleanField()),
                ("created_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("created_by", fields.CharField(max_length=255)),
                ("origin", fields.CharField(max_length=16)),
                ("status", fields.CharField(max_length=16)),
                ("memory_bytes", fields.BigIntField(null=True)),
                ("held", fields.BooleanField(default=False)),
                ("hold_kind", fields.CharField(null=True, max_length=16)),
                ("hold_until", fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                (
                    "hold_reminded_at",
                    fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
                ),
            ],
            options={
                "table": "snapshot",
                "app": "snapbot",
                "unique_together": (("vm_uuid", "libvirt_name"), ("vm_uuid", "label")),
                "pk_attr": "id",
                "table_description": "One snapshot known to snapbot, present in libvirt or not.",
            },
            bases=["Model"],
        ),
        ops.CreateModel(
            name="VmLockRow",
            fields=[
                (
                    "vm_uuid",
                    fields.CharField(primary_key=True, unique=True, db_index=True, max_length=36),
                ),
                ("operation_id", fields.CharField(unique=True, max_length=32)),
                ("owner", fields.CharField(max_length=255)),
                ("acquired_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ("heartbeat_at", fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={
                "table": "vm_lock",
                "app": "snapbot",
                "pk_attr": "vm_uuid",
                "table_description": "The per-VM lock. The primary key makes a second lock on the same VM impossible, on SQLite",
            },
            bases=["Model"],
        ),
    ]
