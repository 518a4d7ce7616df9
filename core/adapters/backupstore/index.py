"""A disk's index file, ``<target>.idx``: which chunks make up the disk, in order.

Binary, like Proxmox Backup Server's ``.fidx``: a header (size, chunk size, chunk count and a
checksum over every digest), then 32 bytes per chunk. Thirty-two zero bytes stand for a chunk
of zeros, which is never stored (SHA-256 never yields all zeros in practice). The checksum lets
a reader tell a damaged index from a good one without any chunk or the manifest.
"""

from __future__ import annotations

import struct

from core.domain.backups import BackupDamaged, DiskIndex, chunk_count

INDEX_SUFFIX = ".idx"
_MAGIC = b"SBINDEX1"
# magic, disk size, chunk size, chunk count, SHA-256 over size, chunk size and digests
_HEADER = struct.Struct("<8sQQQ32s")
_DIGEST_BYTES = 32
_ZERO = bytes(_DIGEST_BYTES)


def encode_index(index: DiskIndex) -> bytes:
    body = b"".join(_ZERO if d is None else bytes.fromhex(d) for d in index.digests)
    header = _HEADER.pack(
        _MAGIC,
        index.size,
        index.chunk_size,
        len(index.digests),
        bytes.fromhex(index.checksum()),
    )
    return header + body


def decode_index(target: str, data: bytes) -> DiskIndex:
    what = f"index of disk {target}"
    if len(data) < _HEADER.size:
        raise BackupDamaged(what, "shorter than its header")
    magic, size, chunk_size, count, checksum = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise BackupDamaged(what, "not a snapbot index (wrong header)")
    body = data[_HEADER.size :]
    if chunk_size == 0 or count != chunk_count(size, chunk_size):
        raise BackupDamaged(what, "its size and chunk count disagree")
    if len(body) != count * _DIGEST_BYTES:
        raise BackupDamaged(what, f"{len(body)} bytes of digests for {count} chunks")
    digests = tuple(
        None if raw == _ZERO else raw.hex()
        for raw in (body[i : i + _DIGEST_BYTES] for i in range(0, len(body), _DIGEST_BYTES))
    )
    index = DiskIndex(target=target, size=size, digests=digests, chunk_size=chunk_size)
    if bytes.fromhex(index.checksum()) != checksum:
        raise BackupDamaged(what, "checksum mismatch: the digests changed")
    return index
