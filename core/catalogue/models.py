"""tortoise-orm tables. Only ``core.catalogue.store`` maps them to and from the domain."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class SnapshotRow(Model):
    """One snapshot known to snapbot, present in libvirt or not."""

    id = fields.IntField(primary_key=True)
    vm_uuid = fields.CharField(max_length=36, db_index=True)
    vm_name = fields.CharField(max_length=255)
    libvirt_name = fields.CharField(max_length=255)
    label = fields.CharField(max_length=64)
    description = fields.TextField(default="")
    kind = fields.CharField(max_length=16)
    captured_state = fields.CharField(max_length=16)
    has_memory = fields.BooleanField()
    created_at = fields.DatetimeField()
    created_by = fields.CharField(max_length=255)
    origin = fields.CharField(max_length=16)
    status = fields.CharField(max_length=16)
    memory_bytes = fields.BigIntField(null=True)
    held = fields.BooleanField(default=False)
    # "until" (hold_until) or "verified" (until its creator says the change is verified).
    hold_kind = fields.CharField(max_length=16, null=True)
    hold_until = fields.DatetimeField(null=True)
    hold_reminded_at = fields.DatetimeField(null=True)
    # Which hypervisor the VM lives on: a VM's UUID is only unique within one host. Null on
    # rows from before migration 0002.
    hypervisor_uri = fields.CharField(max_length=255, null=True)
    host_uuid = fields.CharField(max_length=36, null=True)
    # Restore points in the backup store (kinds "incremental" and "archived"); null on the
    # VM-internal kind and on rows from before migration 0003.
    point_id = fields.CharField(max_length=64, null=True)
    logical_bytes = fields.BigIntField(null=True)
    added_bytes = fields.BigIntField(null=True)
    damage = fields.TextField(null=True)
    consistency = fields.CharField(max_length=32, null=True)

    class Meta:
        table = "snapshot"
        unique_together = (("vm_uuid", "libvirt_name"), ("vm_uuid", "label"))


class OperationRow(Model):
    """One operation: the audit trail. Never deleted."""

    id = fields.CharField(max_length=32, primary_key=True)
    kind = fields.CharField(max_length=16)
    vm_uuid = fields.CharField(max_length=36, db_index=True)
    vm_name = fields.CharField(max_length=255)
    requested_by = fields.CharField(max_length=255)
    via = fields.CharField(max_length=32)
    team = fields.CharField(max_length=64, null=True)
    channel = fields.CharField(max_length=64, null=True)
    status = fields.CharField(max_length=16, db_index=True)
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    snapshot_label = fields.CharField(max_length=255, null=True)
    libvirt_name = fields.CharField(max_length=255, null=True)
    stage = fields.CharField(max_length=32, null=True)
    error = fields.TextField(null=True)
    outcome = fields.TextField(null=True)
    details: fields.Field[dict[str, object]] = fields.JSONField(default=dict)

    class Meta:
        table = "operation"


class VmLockRow(Model):
    """The per-VM lock. The primary key makes a second lock on the same VM impossible, on SQLite
    and PostgreSQL alike; being a row, it survives a crash and is reconciled at start-up."""

    vm_uuid = fields.CharField(max_length=36, primary_key=True)
    operation_id = fields.CharField(max_length=32, unique=True)
    owner = fields.CharField(max_length=255)
    acquired_at = fields.DatetimeField()
    heartbeat_at = fields.DatetimeField()

    class Meta:
        table = "vm_lock"


class ConfirmationRow(Model):
    """A pending or used confirmation. ``used_at`` is set exactly once, by a conditional update."""

    id = fields.CharField(max_length=32, primary_key=True)
    kind = fields.CharField(max_length=16)
    requested_by = fields.CharField(max_length=255)
    team = fields.CharField(max_length=64, null=True)
    channel = fields.CharField(max_length=64, null=True)
    vm_name = fields.CharField(max_length=255, null=True)
    payload: fields.Field[dict[str, object]] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    used_at = fields.DatetimeField(null=True)
    used_by = fields.CharField(max_length=255, null=True)

    class Meta:
        table = "confirmation"


class ScheduleRow(Model):
    """A schedule: the source of truth the scheduler's jobs are rebuilt from."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=40, unique=True)
    vms = fields.CharField(max_length=255)
    cadence = fields.CharField(max_length=16)
    minute = fields.CharField(max_length=64)
    hour = fields.CharField(max_length=64)
    day = fields.CharField(max_length=64)
    month = fields.CharField(max_length=64)
    day_of_week = fields.CharField(max_length=64)
    timezone = fields.CharField(max_length=64)
    policy: fields.Field[dict[str, object] | None] = fields.JSONField(null=True)
    channel = fields.CharField(max_length=64, null=True)
    owner = fields.CharField(max_length=255)
    created_at = fields.DatetimeField()
    grace_seconds = fields.IntField()
    enabled = fields.BooleanField(default=True)
    # The newest fire time handled (run, or reported missed): misses are counted from here.
    last_fire = fields.DatetimeField(null=True)
    # What it does (``ScheduleTask``): full snapshots, incremental ones, or verification. Null
    # in schedules made before there was a choice: they take full snapshots. (Nullable rather
    # than defaulted: a column added with a default is refused by SQLite's ALTER TABLE.)
    task = fields.CharField(max_length=16, null=True)
    # Its retention archives full snapshots into the backup store instead of deleting them.
    archive = fields.BooleanField(null=True)

    class Meta:
        table = "schedule"


class ScheduleRunRow(Model):
    """One run of a schedule. Unique per (schedule, fire time): of two processes that both try
    to run the same slot, the database lets exactly one in."""

    id = fields.IntField(primary_key=True)
    schedule_id = fields.IntField(db_index=True)
    fire_time = fields.DatetimeField()
    owner = fields.CharField(max_length=255)
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=16)
    report: fields.Field[dict[str, object]] = fields.JSONField(default=dict)

    class Meta:
        table = "schedule_run"
        unique_together = (("schedule_id", "fire_time"),)


class LeaseRow(Model):
    """Leadership among bot processes sharing one database: the holder runs the schedules
    until ``expires_at``; ``token`` grows with every change of holder (a fencing token)."""

    name = fields.CharField(max_length=64, primary_key=True)
    holder = fields.CharField(max_length=255)
    expires_at = fields.DatetimeField()
    token = fields.BigIntField()

    class Meta:
        table = "lease"


class DrillRow(Model):
    """One restore drill (``core.domain.drills.Drill``): RUNNING while the throwaway VM is up,
    then passed or failed. Never deleted: the audit trail of rehearsed restores."""

    id = fields.CharField(max_length=16, primary_key=True)
    vm_uuid = fields.CharField(max_length=36, db_index=True)
    vm_name = fields.CharField(max_length=255)
    label = fields.CharField(max_length=64)
    libvirt_name = fields.CharField(max_length=255)
    point_id = fields.CharField(max_length=64, null=True)
    source = fields.CharField(max_length=16)
    point_created_at = fields.DatetimeField()
    started_at = fields.DatetimeField(db_index=True)
    finished_at = fields.DatetimeField(null=True)
    requested_by = fields.CharField(max_length=255)
    result = fields.CharField(max_length=16, db_index=True)
    ready_seconds = fields.FloatField(null=True)
    error = fields.TextField(null=True)
    # PNG of the throwaway VM's display, a few KiB (None: no display).
    screenshot = fields.BinaryField(null=True)
    throwaway_name = fields.CharField(max_length=255)

    class Meta:
        table = "drill"


class UsageSampleRow(Model):
    """One day's storage usage of a VM, the backup store or a filesystem
    (``core.domain.usage.UsageSample``). Unique per (sampled_on, kind, subject): sampling twice
    a day replaces the first; rows older than the history kept are deleted."""

    id = fields.IntField(primary_key=True)
    # Not ``day``: schedule.day is a text column, and a column of one name with two types
    # makes schema comparisons across tables needlessly fragile.
    sampled_on = fields.DateField(db_index=True)
    kind = fields.CharField(max_length=16)
    subject = fields.CharField(max_length=255)
    name = fields.CharField(max_length=255)
    disk_bytes = fields.BigIntField(null=True)
    memory_bytes = fields.BigIntField(null=True)
    backup_bytes = fields.BigIntField(null=True)
    logical_bytes = fields.BigIntField(null=True)
    used_bytes = fields.BigIntField(null=True)
    free_bytes = fields.BigIntField(null=True)

    class Meta:
        table = "usage_sample"
        unique_together = (("sampled_on", "kind", "subject"),)
