"""Plain image files as ``DiskReader`` and ``DiskWriter``: raw images (a test's disk, a copy
made by hand) and the file a point is restored into. VMs' own disks are read and written
through NBD instead (``core.adapters.libvirt.nbd``)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

from core.errors import InvalidInput


class FileDiskReader:
    """A raw image file. Opened per call: the store may read many disks from its threads,
    and a descriptor kept open would outlive a failed backup."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = path.stat().st_size

    @property
    def size(self) -> int:
        return self._size

    def reads_as_zeros(self, offset: int, length: int) -> bool:
        """True when the file has no data in the range (a sparse image's unallocated part),
        known without reading it. Where the filesystem cannot tell, the range is read."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            next_data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as error:
            # ENXIO: no data at or after offset. Anything else: SEEK_DATA unsupported, so read.
            return error.errno == errno.ENXIO
        finally:
            os.close(fd)
        return next_data >= offset + length

    def read(self, offset: int, length: int) -> bytes:
        with self.path.open("rb", buffering=0) as source:
            source.seek(offset)
            data = bytearray()
            while len(data) < length:
                piece = source.read(length - len(data))
                if not piece:
                    raise InvalidInput(
                        f"{self.path} ended at {offset + len(data)} bytes while being read: it "
                        "shrank during the backup; back up a stable image (a snapshot or a "
                        "backup job's view)"
                    )
                data += piece
        return bytes(data)


class FileDiskWriter:
    """An open file being filled with a restored disk. ``fresh`` means it was just truncated
    to its size, so every range already reads as zeros (a hole) and ``zero`` has nothing to
    do; otherwise zeros are written."""

    def __init__(self, out: BinaryIO, size: int, *, fresh: bool) -> None:
        self._out = out
        self._size = size
        self._fresh = fresh

    @property
    def size(self) -> int:
        return self._size

    def write(self, offset: int, data: bytes) -> None:
        self._out.seek(offset)
        self._out.write(data)

    def zero(self, offset: int, length: int) -> None:
        if self._fresh:
            return
        self._out.seek(offset)
        self._out.write(bytes(length))

    def flush(self) -> None:
        self._out.flush()
        os.fsync(self._out.fileno())
