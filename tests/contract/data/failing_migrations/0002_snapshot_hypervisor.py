"""The real migration, under the same name."""

from __future__ import annotations

import importlib

Migration = importlib.import_module("core.catalogue.migrations.0002_snapshot_hypervisor").Migration
