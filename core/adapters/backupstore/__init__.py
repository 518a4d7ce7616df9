"""The deduplicated backup store: fixed-size chunks named by SHA-256, stored once, zstd
compressed; one index per disk and one manifest per restore point (see ``core.domain.backups``).

Modules, one concern each: ``chunks`` (chunk files), ``index`` (a disk's list of chunks),
``manifest`` (a point's description), ``points`` (writing, reading, deleting points),
``writers`` (who is using the store now), ``maintenance`` (garbage collection, verify),
``store`` (the async port on top, in a thread pool).
"""

from __future__ import annotations

from core.adapters.backupstore.store import DirectoryBackupStore

__all__ = ["DirectoryBackupStore"]
