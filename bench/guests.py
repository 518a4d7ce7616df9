"""Real guests for the benchmarks, on the system tests' own libvirtd and with their helpers
(tests/system/conftest.py), so a benchmark touches no VM of the machine's and leaves nothing:
the session directory names this process, and a killed run's leftovers are swept by the next
test or benchmark run like a killed test run's."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.system import daemon
from tests.system.conftest import (
    BOOT_TIMEOUT,
    OWNER_FILE,
    SESSION_DIR,
    SESSION_PREFIX,
    Guest,
    define_guest,
    guest_dir,
    guest_files,
    new_workdir,
    open_test_conn,
    process_identity,
    remove_files,
    remove_guest,
    session_dir,
    sweep_dead_sessions,
)
from tests.system.guest.guest import COMMAND_SOCKET, domain_xml, wait_for_counter

URI = daemon.URI
GUEST_ENV = "SNAPBOT_GUEST_DIR"
# Smoke runs share guests across groups (booting one under TCG is most of a short run's time):
# booted on first use, removed when the run's libvirtd goes.
_SHARED: list[Guest] = []
SMOKE_MEMORY_MIB = 128


@contextmanager
def test_libvirtd(needed: bool) -> Iterator[str | None]:
    """The tests' own libvirtd for the run (None when no group needs one)."""
    if not needed:
        yield None
        return
    os.environ.setdefault(GUEST_ENV, str(Path(".build/guest").resolve()))
    guest_dir()  # fails early, naming the build step, when the guest was not built
    sweep_dead_sessions()
    session_dir()
    (SESSION_DIR / OWNER_FILE).write_text(f"{process_identity(os.getpid())}\n")
    daemon.start_daemon()
    try:
        yield URI
    finally:
        for guest in _SHARED:
            remove_guest(guest.name)
            remove_files(guest.workdir)
        _SHARED.clear()
        if not daemon.SHARED:
            daemon.run_script("stop-libvirtd.sh", "--purge")
        remove_files(SESSION_DIR)


class Guests:
    """Boots counter guests and removes them (domain and files) on exit. With ``share`` (smoke
    runs), the n-th guest booted is the n-th guest of the run, whoever booted it first, and
    stays until the run ends."""

    def __init__(self, *, share: bool = False) -> None:
        self.made: list[Guest] = []
        self.share = share
        self.conn = open_test_conn()

    def boot(
        self, *, memory_mib: int = 256, disk_size_mib: int = 64, disk: Path | None = None
    ) -> Guest:
        """A running counter guest with a command channel; ``disk``: a qcow2 image to boot
        from (moved into the guest's directory) instead of an empty one."""
        if self.share and disk is None:
            if len(self.made) < len(_SHARED):
                guest = _SHARED[len(self.made)]
            else:
                # Half the RAM: a memory snapshot or restore saves or loads half as much.
                guest = define_guest(self.conn, new_workdir(), memory_mib=SMOKE_MEMORY_MIB)
                _SHARED.append(guest)
            self.made.append(guest)
            return guest
        workdir = new_workdir()
        if disk is None:
            guest = define_guest(
                self.conn, workdir, memory_mib=memory_mib, disk_size_mib=disk_size_mib
            )
            self.made.append(guest)
            return guest
        # define_guest always makes an empty disk: the same steps, over the given one.
        kernel, initrd = guest_files()
        name = f"{SESSION_PREFIX}{uuid.uuid4().hex[:6]}"
        image = workdir / "disk.qcow2"
        shutil.move(disk, image)
        daemon.give_to_test_user(image)
        guest = Guest(name, workdir / "serial.log", image, workdir, workdir / COMMAND_SOCKET)
        self.made.append(guest)
        xml = domain_xml(
            name,
            kernel=kernel,
            initrd=initrd,
            disk=image,
            serial_log=guest.serial_log,
            memory_mib=memory_mib,
            command_socket=guest.command_socket,
        )
        self.conn.defineXML(xml).create()
        wait_for_counter(guest.serial_log, after_offset=0, timeout=BOOT_TIMEOUT)
        return guest

    def __enter__(self) -> Guests:
        return self

    def __exit__(self, *exc: object) -> None:
        for guest in reversed(self.made):
            if guest in _SHARED:
                continue
            remove_guest(guest.name)
            remove_files(guest.workdir)
        self.conn.close()
