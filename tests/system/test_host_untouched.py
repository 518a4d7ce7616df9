"""The system tests leave the machine's own libvirt alone (issue 7, defect 13).

Everything a test does to "libvirtd" (start it, restart it, stop it) goes to the tests' own
daemon, found by its pid file and owner. A process that merely has libvirtd's name, like the
system daemon, is never signalled, and /etc/libvirt is never written. A system libvirtd that
runs on this machine is checked too, and the session-end check in conftest repeats both checks
over the whole run.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.system import daemon
from tests.system.conftest import (
    TEST_URI,
    host_changes,
    host_state,
    new_workdir,
    remove_files,
)

pytestmark = pytest.mark.system


@pytest.fixture
def impostors() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Root processes named libvirtd and virtlogd, standing in for a system daemon: anything
    that kills by name (pkill -x libvirtd) kills them."""
    where = new_workdir()
    procs = {}
    for name in ("libvirtd", "virtlogd"):
        program = where / name
        shutil.copyfile("/bin/sleep", program)
        program.chmod(0o755)
        procs[name] = subprocess.Popen([str(program), "600"])
    try:
        yield procs
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
        remove_files(where)


def test_daemon_start_restart_and_stop_touch_only_the_tests_own(
    impostors: dict[str, subprocess.Popen[bytes]],
) -> None:
    before = host_state()
    first = daemon.daemon_pid()
    daemon.restart_daemon()
    # The full start path, not the early exit for a daemon that answers: stopped first.
    daemon.run_script("stop-libvirtd.sh")
    assert daemon.owned_pid(daemon.LIBVIRTD_PID_FILE, "libvirtd") is None
    daemon.start_daemon()
    assert daemon.daemon_pid() != first, "the tests' own daemon was restarted"
    conn = libvirt.open(TEST_URI)
    try:
        assert conn.getURI() == TEST_URI
    finally:
        conn.close()

    for name, proc in impostors.items():
        assert proc.poll() is None, f"a process named {name} was killed by name"
    assert host_changes(before, host_state()) == []


def test_the_test_daemon_is_not_the_system_one() -> None:
    conn = libvirt.open(TEST_URI)
    try:
        # A privileged daemon serves /system only; ours runs QEMU as the test user.
        assert conn.getURI().startswith("qemu:///session")
    finally:
        conn.close()
    pid = daemon.daemon_pid()
    assert Path(f"/proc/{pid}").stat().st_uid == daemon.user_ids()[0]
    assert Path(f"/proc/{pid}").stat().st_uid != 0
