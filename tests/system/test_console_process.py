"""``snapbot console`` as a real process on the real guest: the typed-name confirmation, and a
crash in the middle of a restore reconciled by the next start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from tests.system.conftest import TEST_URI, Guest
from tests.system.guest.guest import read_counter_lines, wait_for_counter, wait_for_restored_count

pytestmark = pytest.mark.system


def console_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LIBVIRT_URI=TEST_URI, SNAPBOT_DATA_DIR=str(workdir / "data"))
    env.pop("DATABASE_URL", None)
    return env


def run_console(
    workdir: Path, script: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "console"],
        input=script,
        capture_output=True,
        text=True,
        env=console_env(workdir),
        timeout=timeout,
        check=False,
    )


def test_console_snapshot_and_typed_name_restore(guest: Guest, workdir: Path) -> None:
    wait_for_counter(guest.serial_log, after_offset=0, timeout=60, predicate=lambda c: c.mem >= 2)
    first = run_console(
        workdir,
        f'/snapshot {guest.name} before-upgrade --desc "pg 15"\n'
        f"/snapshot {guest.name} 2025\n"
        f"/snapshot list {guest.name}\n",
    )
    out = first.stdout
    assert out.splitlines()[0] == f"snapbot: connected to {TEST_URI}. Type /snapshot help."
    assert "Pausing VM · Saving memory · Capturing disk" in out
    assert f"Snapshot `before-upgrade` of {guest.name} taken" in out
    assert "cannot be a snapshot name: it is all digits" in out
    assert "before-upgrade" in out
    assert "pg 15" in out
    assert first.returncode == 1  # one command (the bad name) failed

    mark = read_counter_lines(guest.serial_log)[-1].mem
    wait_for_counter(
        guest.serial_log, after_offset=0, timeout=60, predicate=lambda c: c.mem >= mark + 3
    )
    wrong = run_console(workdir, f"/restore {guest.name} before-upgrade\n{guest.name.upper()}\n")
    assert "Current data will be lost. This cannot be undone." in wrong.stdout
    assert "Type VM name to confirm:" in wrong.stdout
    assert "Restore cancelled" in wrong.stdout
    assert read_counter_lines(guest.serial_log)[-1].mem > mark

    offset = guest.log_size()
    right = run_console(workdir, f"/restore {guest.name} before-upgrade\n{guest.name}\n")
    assert right.returncode == 0, right.stdout + right.stderr
    for stage in ("Stopping VM", "Replacing disk · Restoring memory", "Starting VM"):
        assert stage in right.stdout
    assert f"{guest.name} restored to `before-upgrade`" in right.stdout
    # the same boot id: the restored memory, not a fresh boot
    booted = read_counter_lines(guest.serial_log, after_offset=0)[0].boot
    back = wait_for_restored_count(guest.serial_log, after_offset=offset, at_most=mark + 2)
    assert back.boot == booted


@pytest.mark.reliability  # a crash and a restart: `make reliability`
def test_crash_during_restore_is_reconciled_on_restart(
    guest: Guest, workdir: Path, libvirt_conn: libvirt.virConnect
) -> None:
    prepared = run_console(workdir, f"/snapshot {guest.name} base\n")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    victim = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=console_env(workdir),
    )
    assert victim.stdin is not None
    assert victim.stdout is not None
    victim.stdin.write(f"/restore {guest.name} base --no-safety-snapshot\n{guest.name}\n")
    victim.stdin.flush()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = victim.stdout.readline()
        if "Replacing disk" in line:
            break
    # Kill once libvirtd is working on the revert (QEMU started to load the memory), so the
    # crash lands inside the revert call and not before it was sent.
    dom = libvirt_conn.lookupByName(guest.name)
    while time.monotonic() < deadline and dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    after = run_console(workdir, f"/snapshot list {guest.name}\n/snapshot {guest.name} after\n")
    assert "interrupted by a crash" in after.stdout
    assert f"restore of {guest.name}" in after.stdout
    # "the revert had completed", naming the snapshot or not
    assert re.search(r"the revert (to \S+ )?had completed", after.stdout), after.stdout
    assert f"Snapshot `after` of {guest.name} taken" in after.stdout, after.stdout
    state, _ = libvirt_conn.lookupByName(guest.name).state()
    assert state == libvirt.VIR_DOMAIN_RUNNING
