-- The catalogue tables snapbot release 0.1 (git 4865945) created on PostgreSQL: what
-- tortoise-orm 1.1.9's generate_schemas(safe=True) runs for that commit's
-- core/catalogue/models.py, captured with tortoise.utils.get_schema_sql(client, safe=True).
-- tests/contract/test_migrations.py builds a release catalogue from it and upgrades it.
-- Never edit: it stands for databases already in the field.
CREATE TABLE IF NOT EXISTS "confirmation" (
    "id" VARCHAR(32) NOT NULL PRIMARY KEY,
    "kind" VARCHAR(16) NOT NULL,
    "requested_by" VARCHAR(255) NOT NULL,
    "team" VARCHAR(64),
    "channel" VARCHAR(64),
    "vm_name" VARCHAR(255),
    "payload" JSONB NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "used_at" TIMESTAMPTZ,
    "used_by" VARCHAR(255)
);
COMMENT ON TABLE "confirmation" IS 'A pending or used confirmation. ``used_at`` is set exactly once, by a conditional update.';
CREATE TABLE IF NOT EXISTS "lease" (
    "name" VARCHAR(64) NOT NULL PRIMARY KEY,
    "holder" VARCHAR(255) NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "token" BIGINT NOT NULL
);
COMMENT ON TABLE "lease" IS 'Leadership among bot processes sharing one database: the holder runs the schedules';
CREATE TABLE IF NOT EXISTS "operation" (
    "id" VARCHAR(32) NOT NULL PRIMARY KEY,
    "kind" VARCHAR(16) NOT NULL,
    "vm_uuid" VARCHAR(36) NOT NULL,
    "vm_name" VARCHAR(255) NOT NULL,
    "requested_by" VARCHAR(255) NOT NULL,
    "via" VARCHAR(32) NOT NULL,
    "team" VARCHAR(64),
    "channel" VARCHAR(64),
    "status" VARCHAR(16) NOT NULL,
    "started_at" TIMESTAMPTZ NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "snapshot_label" VARCHAR(255),
    "libvirt_name" VARCHAR(255),
    "stage" VARCHAR(32),
    "error" TEXT,
    "outcome" TEXT,
    "details" JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS "idx_operation_vm_uuid_5889da" ON "operation" ("vm_uuid");
CREATE INDEX IF NOT EXISTS "idx_operation_status_31b270" ON "operation" ("status");
COMMENT ON TABLE "operation" IS 'One operation: the audit trail. Never deleted.';
CREATE TABLE IF NOT EXISTS "schedule" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(40) NOT NULL UNIQUE,
    "vms" VARCHAR(255) NOT NULL,
    "cadence" VARCHAR(16) NOT NULL,
    "minute" VARCHAR(64) NOT NULL,
    "hour" VARCHAR(64) NOT NULL,
    "day" VARCHAR(64) NOT NULL,
    "month" VARCHAR(64) NOT NULL,
    "day_of_week" VARCHAR(64) NOT NULL,
    "timezone" VARCHAR(64) NOT NULL,
    "policy" JSONB,
    "channel" VARCHAR(64),
    "owner" VARCHAR(255) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "grace_seconds" INT NOT NULL,
    "enabled" BOOL NOT NULL,
    "last_fire" TIMESTAMPTZ
);
COMMENT ON TABLE "schedule" IS 'A schedule: the source of truth the scheduler''s jobs are rebuilt from.';
CREATE TABLE IF NOT EXISTS "schedule_run" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "schedule_id" INT NOT NULL,
    "fire_time" TIMESTAMPTZ NOT NULL,
    "owner" VARCHAR(255) NOT NULL,
    "started_at" TIMESTAMPTZ NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "status" VARCHAR(16) NOT NULL,
    "report" JSONB NOT NULL,
    CONSTRAINT "uid_schedule_ru_schedul_eceb10" UNIQUE ("schedule_id", "fire_time")
);
CREATE INDEX IF NOT EXISTS "idx_schedule_ru_schedul_9d67d6" ON "schedule_run" ("schedule_id");
COMMENT ON TABLE "schedule_run" IS 'One run of a schedule. Unique per (schedule, fire time): of two processes that both try';
CREATE TABLE IF NOT EXISTS "snapshot" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "vm_uuid" VARCHAR(36) NOT NULL,
    "vm_name" VARCHAR(255) NOT NULL,
    "libvirt_name" VARCHAR(255) NOT NULL,
    "label" VARCHAR(64) NOT NULL,
    "description" TEXT NOT NULL,
    "kind" VARCHAR(16) NOT NULL,
    "captured_state" VARCHAR(16) NOT NULL,
    "has_memory" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "created_by" VARCHAR(255) NOT NULL,
    "origin" VARCHAR(16) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "memory_bytes" BIGINT,
    "held" BOOL NOT NULL,
    "hold_kind" VARCHAR(16),
    "hold_until" TIMESTAMPTZ,
    "hold_reminded_at" TIMESTAMPTZ,
    CONSTRAINT "uid_snapshot_vm_uuid_f46212" UNIQUE ("vm_uuid", "libvirt_name"),
    CONSTRAINT "uid_snapshot_vm_uuid_a9f6e9" UNIQUE ("vm_uuid", "label")
);
CREATE INDEX IF NOT EXISTS "idx_snapshot_vm_uuid_236595" ON "snapshot" ("vm_uuid");
COMMENT ON TABLE "snapshot" IS 'One snapshot known to snapbot, present in libvirt or not.';
CREATE TABLE IF NOT EXISTS "vm_lock" (
    "vm_uuid" VARCHAR(36) NOT NULL PRIMARY KEY,
    "operation_id" VARCHAR(32) NOT NULL UNIQUE,
    "owner" VARCHAR(255) NOT NULL,
    "acquired_at" TIMESTAMPTZ NOT NULL,
    "heartbeat_at" TIMESTAMPTZ NOT NULL
);
COMMENT ON TABLE "vm_lock" IS 'The per-VM lock. The primary key makes a second lock on the same VM impossible, on SQLite';
