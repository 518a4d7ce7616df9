"""Writing files so that a crash leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# Every temporary file the store creates ends so; garbage collection removes stale ones.
TEMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def fsync_directory(directory: Path) -> None:
    """Makes a rename or an unlink in ``directory`` survive a power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A temporary file that, when the block ends without an error, is fsynced and renamed to
    ``path``: ``path`` then holds all of it, or stays as it was. The directory is not fsynced
    here: a caller writing many files fsyncs each directory once."""
    temp = temp_path_for(path)
    try:
        with temp.open("xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def replace_durably(path: Path, data: bytes) -> None:
    """``path`` holds all of ``data`` or stays as it was (see ``replacing``)."""
    with replacing(path) as out:
        out.write(data)


def write_atomically(path: Path, data: bytes) -> None:
    """``replace_durably`` and the directory's fsync: the new name survives a crash too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_durably(path, data)
    fsync_directory(path.parent)
