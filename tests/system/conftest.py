"""Fixtures for tests on a real QEMU guest under the tests' own libvirt daemon (the session
fixture below starts it; ``make test`` builds the guest; these tests fail, not skip, when
either cannot be had).

The suite must leave the host as it found it (issue 7, defect 13): it talks only to the daemon
it starts for itself (``daemon.URI``, stopped and removed at the end), every domain it defines
is undefined with its files in a finalizer that runs even when the test fails, and a
session-end check fails the run, naming them, if a test domain, a test file or a mount is
left, or if the machine's system libvirtd or /etc/libvirt changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import libvirt
import pytest

from core.adapters.backupstore import DirectoryBackupStore
from core.adapters.libvirt.connection import LibvirtConnection
from core.adapters.libvirt.disk_access import LibvirtDiskAccess
from core.adapters.libvirt.hypervisor import LibvirtHypervisor
from core.bootstrap import Core, wire
from core.catalogue.store import SystemClock, TortoiseCatalogue
from core.config import Settings
from core.services.operations import OperationRunner, process_owner
from core.services.reconcile import Reconciler
from core.services.snapshots import SnapshotService
from tests.system import daemon, remote_host
from tests.system.guest.guest import COMMAND_SOCKET, create_disk, domain_xml, wait_for_counter

TEST_URI = daemon.URI
BOOT_TIMEOUT = 60.0
DOMAIN_PREFIX = "snapbot-test-"
# One directory and one domain-name prefix per pytest process: the end-of-session check judges
# only what this run made, so a developer's parallel run is not reported as our leftover.
SESSION = daemon.SESSION
SESSION_PREFIX = f"{DOMAIN_PREFIX}{SESSION}-"
TEST_ROOT = daemon.TEST_ROOT
SESSION_DIR = daemon.SESSION_DIR
SYSTEM_PID_FILES = (Path("/run/libvirt/libvirtd.pid"), Path("/var/run/libvirtd.pid"))
SYSTEM_CONFIG_DIR = Path("/etc/libvirt")


def guest_dir() -> Path:
    path = Path(os.environ.get("SNAPBOT_GUEST_DIR", ".build/guest")).resolve()
    if not (path / "vmlinuz").exists() or not (path / "initrd.img").exists():
        pytest.fail(
            f"no test guest in {path}: run the system tests with `make test` (it builds the "
            "guest and starts the test libvirtd)"
        )
    return path


def session_dir() -> Path:
    """This run's directory; traversable by the test user whose QEMU reads from it."""
    if not SESSION_DIR.exists():
        TEST_ROOT.mkdir(mode=0o755, exist_ok=True)
        SESSION_DIR.mkdir(mode=0o755)
    return SESSION_DIR


OWNER_FILE = "owner"


def process_identity(pid: int) -> str | None:
    """``pid`` and its start time: a pid alone may be reused by another process."""
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{pid} {start}"


def sweep_dead_sessions() -> list[str]:
    """Remove what runs killed before their own clean-up (timeout, SIGKILL, a lost CI
    machine) left: each session dir names its pytest process, and only sessions whose
    process is gone are swept, so a parallel run's guests are never touched."""
    swept: list[str] = []
    if not TEST_ROOT.exists():
        return swept
    for path in sorted(TEST_ROOT.iterdir()):
        try:
            owner = (path / OWNER_FILE).read_text().strip()
        except OSError:
            continue  # not a session of this design: not ours to judge
        pid = int(owner.split()[0]) if owner.split()[0].isdigit() else 0
        if path == SESSION_DIR or process_identity(pid) == owner:
            continue
        # Its guests ran on its own daemon, which outlived it; or, in a shared daemon, under
        # its name prefix.
        own_daemon = path / "libvirt"
        uri = daemon.uri_of(own_daemon) if own_daemon.exists() else TEST_URI
        prefix = f"{DOMAIN_PREFIX}{path.name}-"
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            conn = None
        if conn is not None:
            try:
                names = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
            finally:
                conn.close()
            for name in names:
                remove_guest(name, uri)
                swept.append(f"domain {name}")
        if own_daemon.exists():
            daemon.run_script("stop-libvirtd.sh", "--purge", base=own_daemon)
            swept.append(f"its libvirtd in {own_daemon}")
        remove_files(path)
        swept.append(f"dir {path}")
    return swept


def guest_files() -> tuple[Path, Path]:
    """The kernel and initramfs, copied where the test user can read them (the build dir may
    sit in a home directory it cannot enter)."""
    target = session_dir() / "guest"
    if not (target / "initrd.img").exists():
        source = guest_dir()
        target.mkdir(mode=0o755, exist_ok=True)
        for name in ("vmlinuz", "initrd.img"):
            shutil.copyfile(source / name, target / f"{name}.tmp")
            (target / f"{name}.tmp").chmod(0o644)
            (target / f"{name}.tmp").rename(target / name)
    return target / "vmlinuz", target / "initrd.img"


def new_workdir() -> Path:
    """A directory for one guest's files, owned by the user QEMU runs as."""
    path = session_dir() / uuid.uuid4().hex[:8]
    path.mkdir(mode=0o755)
    daemon.give_to_test_user(path)
    return path


def open_test_conn() -> libvirt.virConnect:
    try:
        return libvirt.open(TEST_URI)
    except libvirt.libvirtError as exc:
        pytest.fail(
            f"cannot reach the tests' own libvirtd at {TEST_URI} ({exc}); its log is "
            f"{daemon.BASE}/cache/libvirt/libvirtd.log"
        )


@dataclass
class Guest:
    """A running test VM: its libvirt name, its serial log, its disk."""

    name: str
    serial_log: Path
    disk: Path
    workdir: Path
    # The unix socket of its command port (guest.guest_write); None when defined without one.
    command_socket: Path | None = None

    def log_size(self) -> int:
        return self.serial_log.stat().st_size if self.serial_log.exists() else 0


def define_guest(
    conn: libvirt.virConnect,
    workdir: Path,
    *,
    memory_mib: int = 256,
    fill_mib: int = 0,
    disk_size_mib: int = 64,
    command_channel: bool = True,
) -> Guest:
    """Define and start a counter guest whose files live in ``workdir``. ``fill_mib`` makes its
    init fill that much of its memory first, so that saving and loading it take seconds (a
    window for fault injection). ``command_channel`` gives it the serial port that
    ``guest.guest_write`` talks to. A guest that fails to come up is removed before the error
    propagates."""
    kernel, initrd = guest_files()
    workdir.mkdir(parents=True, exist_ok=True)
    daemon.give_to_test_user(workdir)
    name = f"{SESSION_PREFIX}{uuid.uuid4().hex[:6]}"
    disk = workdir / "disk.qcow2"
    serial = workdir / "serial.log"
    command_socket = workdir / COMMAND_SOCKET if command_channel else None
    create_disk(disk, disk_size_mib)
    daemon.give_to_test_user(disk)
    xml = domain_xml(
        name,
        kernel=kernel,
        initrd=initrd,
        disk=disk,
        serial_log=serial,
        memory_mib=memory_mib,
        fill_mib=fill_mib,
        command_socket=command_socket,
    )
    guest = Guest(name, serial, disk, workdir, command_socket)
    try:
        conn.defineXML(xml).create()
        wait_for_counter(serial, after_offset=0, timeout=BOOT_TIMEOUT + fill_mib / 4)
    except BaseException:
        remove_guest(name)
        raise
    return guest


def remove_guest(name: str, uri: str = TEST_URI) -> None:
    """Destroy and undefine ``name`` (its snapshot metadata too) on a fresh connection: the
    test's own connection may have died with a libvirtd restart, and a daemon a test stopped
    is started again first."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        if uri != TEST_URI:
            return  # another run's daemon, gone with its guests
        daemon.start_daemon()
        conn = libvirt.open(uri)
    try:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(
            libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
            | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
            | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
        )
    finally:
        conn.close()


def remove_files(path: Path) -> None:
    """Remove a workdir, unmounting anything a test mounted inside it first."""
    for mount in mounts_under(path):
        subprocess.run(["umount", "-l", str(mount)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def mounts_under(path: Path) -> list[Path]:
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = Path(line.split()[1].replace("\\040", " "))
        if target == path or path in target.parents:
            found.append(target)
    # Deepest first, so nested mounts come off in order.
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


@pytest.fixture
def libvirt_conn() -> Iterator[libvirt.virConnect]:
    conn = open_test_conn()
    yield conn
    with contextlib.suppress(libvirt.libvirtError):  # already gone with a restarted daemon
        conn.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: QEMU (the test user) must reach it, and paths stay short.
    path = new_workdir()
    yield path
    remove_files(path)


@dataclass
class Guests:
    """Defines guests for one test and removes every one of them (domain and files) when the
    test ends, passed or failed."""

    conn: libvirt.virConnect
    made: list[Guest] = field(default_factory=list)

    def __call__(
        self, workdir: Path | None = None, *, command_channel: bool = True, **options: int
    ) -> Guest:
        guest = define_guest(
            self.conn, workdir or new_workdir(), command_channel=command_channel, **options
        )
        self.made.append(guest)
        return guest

    def remove_all(self) -> None:
        for guest in reversed(self.made):
            remove_guest(guest.name)
            remove_files(guest.workdir)


@pytest.fixture
def guests(libvirt_conn: libvirt.virConnect, workdir: Path) -> Iterator[Guests]:
    # Depends on ``workdir`` only for the order of teardown: guests go before their files (and
    # before the small filesystems a test mounted there).
    made = Guests(libvirt_conn)
    try:
        yield made
    finally:
        made.remove_all()


@pytest.fixture
def guest(guests: Guests, workdir: Path) -> Guest:
    return guests(workdir)


@dataclass
class RealCore:
    hv: LibvirtHypervisor
    catalogue: TortoiseCatalogue
    service: SnapshotService
    reconciler: Reconciler


@pytest.fixture
async def real(catalogue: TortoiseCatalogue) -> AsyncIterator[RealCore]:
    hv = LibvirtHypervisor(LibvirtConnection(TEST_URI, workers=4))
    clock = SystemClock()
    owner = process_owner()
    yield RealCore(
        hv,
        catalogue,
        SnapshotService(hv, catalogue, OperationRunner(catalogue, clock, owner), clock),
        Reconciler(hv, catalogue, clock, owner),
    )
    await hv.close()


@pytest.fixture
def small_fs(workdir: Path) -> Path:
    """A 200 MiB tmpfs owned by the test user: too small for the memory of a 256 MiB guest.
    Unmounted with the workdir, after the guests on it are gone."""
    mount = workdir / "small"
    mount.mkdir()
    uid, gid = daemon.user_ids()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=200M,mode=0755,uid={uid},gid={gid}", "tmpfs", mount],
        check=True,
    )
    return mount


# -- the host is left as it was found ----------------------------------------------------------


def system_libvirtd_pid() -> int | None:
    """The machine's system libvirtd, if one runs (read from its pid file, never looked for by
    name: a name matches our own daemon too)."""
    for pid_file in SYSTEM_PID_FILES:
        try:
            pid = int(pid_file.read_text().strip())
            if Path(f"/proc/{pid}/comm").read_text().strip() == "libvirtd":
                return pid
        except (OSError, ValueError):
            continue
    return None


def config_fingerprint(root: Path = SYSTEM_CONFIG_DIR) -> dict[str, tuple[str, int, int]]:
    """Every file under /etc/libvirt: content hash, inode and mtime (``sed -i`` keeps the
    content but not the inode)."""
    prints: dict[str, tuple[str, int, int]] = {}
    if not root.exists():
        return prints
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            prints[str(path)] = (digest, stat.st_ino, stat.st_mtime_ns)
    return prints


@dataclass(frozen=True)
class HostState:
    system_libvirtd: int | None
    system_config: dict[str, tuple[str, int, int]]


def host_state() -> HostState:
    return HostState(system_libvirtd_pid(), config_fingerprint())


def host_changes(before: HostState, after: HostState) -> list[str]:
    problems = []
    if before.system_libvirtd is not None and after.system_libvirtd != before.system_libvirtd:
        problems.append(
            f"the system libvirtd (pid {before.system_libvirtd}) was restarted or stopped "
            f"(now: {after.system_libvirtd})"
        )
    changed = sorted(
        path
        for path in before.system_config.keys() | after.system_config.keys()
        if before.system_config.get(path) != after.system_config.get(path)
    )
    if changed:
        problems.append(f"files under {SYSTEM_CONFIG_DIR} changed: {', '.join(changed)}")
    return problems


def leftovers() -> list[str]:
    """Domains, mounts and files this session made and did not remove."""
    found = []
    try:
        conn = libvirt.open(TEST_URI)
    except libvirt.libvirtError:
        conn = None  # no daemon, so no domain of ours either
    if conn is not None:
        try:
            names = [d.name() for d in conn.listAllDomains()]
        finally:
            conn.close()
        # Our own daemon holds only our guests; a shared one, others' too.
        found += [
            f"domain {n}"
            for n in sorted(names)
            if n.startswith(SESSION_PREFIX) or not daemon.SHARED
        ]
    if SESSION_DIR.exists():
        found += [f"mount {m}" for m in mounts_under(SESSION_DIR)]
        ours = {SESSION_DIR / "guest", SESSION_DIR / OWNER_FILE, SESSION_DIR / "libvirt"}
        found += [f"file {p}" for p in sorted(SESSION_DIR.iterdir()) if p not in ours]
    return found


@pytest.fixture(scope="session", autouse=True)
def host_left_alone() -> Iterator[None]:
    """Fails the run, loudly and by name, if it left anything behind or touched what it did
    not start; removes the leftovers too, so a failed run still cleans up."""
    before = host_state()
    swept = sweep_dead_sessions()
    if swept:
        warnings.warn(
            "removed what killed system-test runs left behind: " + "; ".join(swept),
            stacklevel=1,
        )
    session_dir()
    (SESSION_DIR / OWNER_FILE).write_text(f"{process_identity(os.getpid())}\n")
    daemon.start_daemon()
    yield
    left = leftovers()
    for item in left:
        kind, _, what = item.partition(" ")
        if kind == "domain":
            remove_guest(what)
    if not daemon.SHARED:
        daemon.run_script("stop-libvirtd.sh", "--purge")
    if SESSION_DIR.exists():
        remove_files(SESSION_DIR)
    problems = host_changes(before, host_state())
    if left:
        problems.append("the system tests left behind: " + "; ".join(left))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# -- a second libvirt host, reached over ssh (remote_host.py) ----------------------------------


@pytest.fixture(scope="session")
def second_host() -> Iterator[remote_host.RemoteHost]:
    """Another user's session libvirtd behind a private sshd: a separate hypervisor (its own
    host UUID, domains and storage pool) at a ``qemu+ssh://`` URI. Made once per run, removed
    at its end (before the session-end check judges what is left)."""
    swept = remote_host.sweep_dead_runs()
    if swept:
        warnings.warn(
            "removed what killed system-test runs left behind: " + "; ".join(swept),
            stacklevel=1,
        )
    host = remote_host.new_host()
    try:
        try:
            host.set_up()
        except (OSError, subprocess.CalledProcessError, AssertionError) as exc:
            pytest.fail(f"cannot set up the second libvirt host: {exc}", pytrace=False)
        yield host
    finally:
        host.tear_down()


@pytest.fixture(scope="module")
def second_host_guest(
    second_host: remote_host.RemoteHost,
) -> Iterator[remote_host.HostGuest]:
    """A counter guest running on the second host, shared by a module's tests (booting one
    takes seconds); removed with the module."""
    guest = second_host.start_guest()
    try:
        yield guest
    finally:
        second_host.ensure_up()  # a test may have left it down
        second_host.remove_all_guests()
        for path in (guest.disk, guest.serial_log):
            path.unlink(missing_ok=True)


@pytest.fixture
def temp_root() -> Iterator[Path]:
    """Where disk-access views make their temporary directories: /var/tmp in production, the
    test's own here, so a parallel run's views are not counted as ours, and removed after."""
    path = new_workdir()
    yield path
    remove_files(path)


@pytest.fixture
async def access(temp_root: Path) -> AsyncIterator[LibvirtDiskAccess]:
    """The production disk access on the tests' own libvirtd."""
    connection = LibvirtConnection(TEST_URI, workers=4)
    disk_access = LibvirtDiskAccess(connection, temp_root=temp_root)
    yield disk_access
    await disk_access.close()
    await connection.close()


@dataclass
class StoreCore:
    """A wired core over the tests' own libvirtd with a backup store in the test's workdir."""

    core: Core
    store: DirectoryBackupStore
    root: Path


@pytest.fixture
async def store_core(
    catalogue: TortoiseCatalogue, workdir: Path, temp_root: Path
) -> AsyncIterator[StoreCore]:
    root = workdir / "store"
    connection = LibvirtConnection(TEST_URI, workers=4)
    hv = LibvirtHypervisor(connection)
    # No safety margin: tests judge garbage collection right after a delete.
    store = DirectoryBackupStore(root, gc_safety_margin=timedelta(0))
    disks = LibvirtDiskAccess(connection, temp_root=temp_root)
    settings = Settings(
        libvirt_uri=TEST_URI,
        libvirt_uri_explicit=True,
        data_dir=workdir,
        database_url="sqlite://:memory:",
        backup_dir=root,
    )
    core = wire(
        settings, hv, catalogue, SystemClock(), libvirt_uri=TEST_URI, store=store, disks=disks
    )
    try:
        yield StoreCore(core, store, root)
    finally:
        await disks.close()
        store.close()
        await hv.close()
