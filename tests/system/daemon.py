"""The system tests' own libvirt daemon (``host/start-libvirtd.sh``): where it lives, and how a
test restarts it or finds its QEMU processes, always by pid file and owner, never by name.

It is a session libvirtd of the ``snapbot-test`` user, so nothing here can reach the machine's
system libvirtd or its VMs (issue 7, defect 13). Each pytest run starts its own, under its own
session directory, and stops and removes it at the end (conftest's ``host_left_alone``): runs
side by side never see each other's guests, and a daemon restart in one cannot hit another.
With ``SNAPBOT_TEST_LIBVIRT_DIR`` set, the daemon there is used instead and left running.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
import uuid
from pathlib import Path

ENV = "SNAPBOT_TEST_LIBVIRT_DIR"
TEST_ROOT = Path("/var/tmp/snapbot-tests")
# One directory and one domain-name prefix per pytest process.
SESSION = uuid.uuid4().hex[:6]
SESSION_DIR = TEST_ROOT / SESSION
# A daemon someone else runs (the variable was set before us, or we are a subprocess of a run
# that set it): used, never stopped.
SHARED = ENV in os.environ
if not SHARED:
    os.environ[ENV] = str(SESSION_DIR / "libvirt")
BASE = Path(os.environ[ENV])
TEST_USER = "snapbot-test"
HOST_SCRIPTS = Path(__file__).resolve().parent / "host"


def socket_of(base: Path) -> Path:
    return base / "runtime" / "libvirt" / "libvirt-sock"


def uri_of(base: Path) -> str:
    # The path is /session: the daemon is an unprivileged one; the socket query parameter makes
    # root's client talk to it instead of to the system daemon. Still a local URI for snapbot.
    return f"qemu:///session?socket={socket_of(base)}"


SOCKET = socket_of(BASE)
URI = uri_of(BASE)
LIBVIRTD_PID_FILE = BASE / "runtime" / "libvirt" / "libvirtd.pid"
QEMU_RUN_DIR = BASE / "runtime" / "libvirt" / "qemu" / "run"


def run_script(name: str, *args: str, base: Path = BASE) -> None:
    subprocess.run(
        ["bash", str(HOST_SCRIPTS / name), *args], check=True, env={**os.environ, ENV: str(base)}
    )


def user_ids() -> tuple[int, int]:
    entry = pwd.getpwnam(TEST_USER)
    return entry.pw_uid, entry.pw_gid


def give_to_test_user(path: Path) -> None:
    """QEMU runs as the test user: it must own the guest's directory and disk."""
    uid, gid = user_ids()
    os.chown(path, uid, gid)


def owned_pid(pid_file: Path, program: str) -> int | None:
    """The pid in ``pid_file`` if that process is ``program`` run by the test user, else None.
    Both checks, because a pid file can outlive its process and the pid be reused."""
    try:
        pid = int(pid_file.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        owner = Path(f"/proc/{pid}").stat().st_uid
    except (OSError, ValueError):
        return None
    # /proc/<pid>/comm holds the first 15 characters of the program name.
    if comm != program[:15] or owner != user_ids()[0]:
        return None
    return pid


def start_daemon() -> None:
    run_script("start-libvirtd.sh")


def daemon_pid() -> int:
    pid = owned_pid(LIBVIRTD_PID_FILE, "libvirtd")
    if pid is None:
        raise AssertionError(f"the test libvirtd is not running ({LIBVIRTD_PID_FILE})")
    return pid


def wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        # A zombie has exited; only its parent's wait is missing.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                return
        except (OSError, IndexError):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} still runs {timeout:.0f} s after the signal")
        time.sleep(0.05)


def stop_daemon(sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop the test libvirtd with ``sig`` (SIGTERM: a service restart, which lets a running
    job finish; SIGKILL: a crash) and wait until it is gone. Its guests keep running."""
    pid = daemon_pid()
    os.kill(pid, sig)
    wait_gone(pid, 30)


def restart_daemon(sig: signal.Signals = signal.SIGTERM) -> int:
    """Restart the test libvirtd; its new pid."""
    old = daemon_pid()
    stop_daemon(sig)
    start_daemon()
    new = daemon_pid()
    assert new != old
    return new


def qemu_pid(domain: str) -> int | None:
    """The pid of ``domain``'s QEMU, from the pid file QEMU writes in the daemon's run dir."""
    return owned_pid(QEMU_RUN_DIR / f"{domain}.pid", "qemu-system-x86_64")
