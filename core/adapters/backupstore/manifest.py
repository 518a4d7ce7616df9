"""A restore point's ``manifest.json``: readable by people and by any later snapbot.

It carries its own SHA-256 (over the rest, canonically serialised), so a damaged manifest is
told apart from a good one, and each disk's index checksum, which ties it to its index files.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from core.domain.backups import (
    BackupDamaged,
    BackupKind,
    BlobRecord,
    Consistency,
    DiskRecord,
    Manifest,
    PointRef,
    TransferFigures,
)
from core.errors import InvalidInput

MANIFEST_NAME = "manifest.json"
FORMAT = "snapbot-restore-point/1"


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def encode_manifest(manifest: Manifest) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "vm_uuid": manifest.ref.vm_uuid,
        "point_id": manifest.ref.point_id,
        "vm_name": manifest.vm_name,
        "created_at": manifest.created_at.isoformat(),
        "kind": manifest.kind.value,
        "description": manifest.description,
        "label": manifest.label,
        "created_by": manifest.created_by,
        "consistency": None if manifest.consistency is None else manifest.consistency.value,
        "domain_xml": manifest.domain_xml,
        "disks": [
            {
                "target": disk.target,
                "size": disk.size,
                "chunk_count": disk.chunk_count,
                "index_checksum": disk.index_checksum,
                "bytes_read": disk.figures.bytes_read,
                "bytes_new": disk.figures.bytes_new,
                "bytes_stored": disk.figures.bytes_stored,
                "seconds": disk.figures.seconds,
            }
            for disk in manifest.disks
        ],
        "blobs": [
            {"name": blob.name, "size": blob.size, "sha256": blob.sha256} for blob in manifest.blobs
        ],
    }
    body["checksum"] = hashlib.sha256(_canonical(body)).hexdigest()
    return json.dumps(body, sort_keys=True, indent=1, ensure_ascii=False).encode() + b"\n"


def decode_manifest(data: bytes, where: str) -> Manifest:
    what = f"manifest {where}"
    try:
        body = json.loads(data)
        checksum = body.pop("checksum")
    except (ValueError, AttributeError, KeyError):
        raise BackupDamaged(what, "not a manifest (unreadable JSON or no checksum)") from None
    if hashlib.sha256(_canonical(body)).hexdigest() != checksum:
        raise BackupDamaged(what, "checksum mismatch: the manifest changed")
    if body.get("format") != FORMAT:
        raise BackupDamaged(what, f"format {body.get('format')!r}, this snapbot reads {FORMAT}")
    try:
        return Manifest(
            ref=PointRef(body["vm_uuid"], body["point_id"]),
            vm_name=body["vm_name"],
            created_at=datetime.fromisoformat(body["created_at"]),
            kind=BackupKind(body["kind"]),
            description=body["description"],
            # Optional: points written before snapbot kept the catalogue's record with them.
            label=body.get("label", ""),
            created_by=body.get("created_by", ""),
            consistency=None
            if body.get("consistency") is None
            else Consistency(body["consistency"]),
            domain_xml=body["domain_xml"],
            disks=tuple(
                DiskRecord(
                    target=d["target"],
                    size=d["size"],
                    chunk_count=d["chunk_count"],
                    index_checksum=d["index_checksum"],
                    figures=TransferFigures(
                        d["bytes_read"], d["bytes_new"], d["bytes_stored"], d["seconds"]
                    ),
                )
                for d in body["disks"]
            ),
            blobs=tuple(BlobRecord(b["name"], b["size"], b["sha256"]) for b in body["blobs"]),
        )
    except (KeyError, TypeError, ValueError, InvalidInput) as error:
        raise BackupDamaged(what, f"a field is missing or wrong: {error}") from None
