"""The real migration, under the same name."""

from __future__ import annotations

import importlib

Migration = importlib.import_module("core.catalogue.migrations.0001_release_0_1").Migration
