"""A second, separate libvirt host for the system tests, reached over a real remote transport.

It is the *session* libvirtd of another local user (``snapbot-hostb``), reached through a
private sshd that listens on a free loopback port: ``qemu+ssh://snapbot-hostb@127.0.0.1:PORT/
session``, a libvirt with its own domains, storage pools and host UUID (the recipe of
../shared/reference/libvirt.md section 14). Nothing of the machine's is used or changed: not
/etc/ssh nor a system sshd (ours has its own config, host key and pid file), not root's
~/.ssh (the URI's ``command`` is a wrapper that runs ssh with our own config and
known_hosts), not the machine's libvirtd. Everything lives in one directory per pytest run
under ``/var/tmp/snapbot-hostb``, removed at the end; only the user account stays, as the
test daemon's ``snapbot-test`` does (``host/start-libvirtd.sh``). A run killed before its
clean-up is swept by the next one: its processes are found by their pid files and checked to
be that program of that owner, never looked for by name.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from tests.system import daemon
from tests.system.guest.guest import create_disk, domain_xml, wait_for_counter

USER = "snapbot-hostb"
ROOT = Path("/var/tmp/snapbot-hostb")
OWNER_FILE = "owner"
DOMAIN_PREFIX = "snapbot-hostb-"
POOL_NAME = "snapbot-images"
SSHD = "/usr/sbin/sshd"
# sshd's privilege-separation directory (the package's unit makes it; without systemd, we do).
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 30.0
BOOT_TIMEOUT = 60.0


def _process_identity(pid: int) -> str | None:
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return f"{pid} {start}"


def _owned_pid(pid_file: Path, program: str, uid: int) -> int | None:
    """The pid in ``pid_file`` if that process is ``program`` run by ``uid``; else None (a
    pid file can outlive its process and the pid be reused)."""
    try:
        pid = int(pid_file.read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        owner = Path(f"/proc/{pid}").stat().st_uid
    except (OSError, ValueError, IndexError):
        return None
    if comm != program[:15] or owner != uid:
        return None
    return pid


def _stop(pid_file: Path, program: str, uid: int, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Stop ``program`` by its pid file; True if it was running."""
    pid = _owned_pid(pid_file, program, uid)
    if pid is None:
        return False
    os.kill(pid, sig)
    try:
        daemon.wait_gone(pid, 10)
    except AssertionError:
        os.kill(pid, signal.SIGKILL)
        daemon.wait_gone(pid, 10)
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_user() -> tuple[int, int]:
    """The host's user, created when missing (and then kept, like the test daemon's user). A
    shell, because sshd runs the remote end of libvirt's transport through it; an unusable
    password ``*`` rather than a locked account, which sshd refuses without PAM."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(
            [
                *("useradd", "--system", "--user-group", "--home-dir", "/nonexistent"),
                *("--no-create-home", "--shell", "/bin/sh", USER),
            ],
            check=True,
        )
        subprocess.run(["usermod", "-p", "*", USER], check=True)
        entry = pwd.getpwnam(USER)
    return entry.pw_uid, entry.pw_gid


@dataclass
class HostGuest:
    """A counter guest running on the second host."""

    name: str
    disk: Path
    serial_log: Path


@dataclass
class RemoteHost:
    """One run's second host: its directory, its sshd and its session libvirtd."""

    base: Path
    uid: int
    gid: int
    port: int = 0
    setup_seconds: float = 0.0
    guests: list[HostGuest] = field(default_factory=list)

    # -- where things are ----------------------------------------------------------------------

    @property
    def ssh_dir(self) -> Path:
        return self.base / "ssh"

    @property
    def home(self) -> Path:
        return self.base / "home"

    @property
    def images(self) -> Path:
        """Where the host's guest files live: a directory storage pool on that host."""
        return self.base / "images"

    @property
    def xdg(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "XDG_RUNTIME_DIR": str(self.home / "runtime"),
            "XDG_CACHE_HOME": str(self.home / "cache"),
            "XDG_DATA_HOME": str(self.home / "data"),
        }

    @property
    def libvirtd_pid_file(self) -> Path:
        return self.home / "runtime" / "libvirt" / "libvirtd.pid"

    @property
    def sshd_pid_file(self) -> Path:
        return self.ssh_dir / "sshd.pid"

    @property
    def uri(self) -> str:
        """The host as snapbot sees it: a remote URI over ssh (``command``: our own ssh
        configuration, never root's ~/.ssh; ``no_tty``: never a password prompt)."""
        return (
            f"qemu+ssh://{USER}@127.0.0.1:{self.port}/session"
            f"?command={self.ssh_dir / 'ssh'}&no_tty=1"
        )

    # -- set up and tear down ------------------------------------------------------------------

    def set_up(self) -> None:
        started = time.monotonic()
        ROOT.mkdir(mode=0o755, exist_ok=True)
        self.base.mkdir(mode=0o755)
        (self.base / OWNER_FILE).write_text(f"{_process_identity(os.getpid())}\n")
        self.ssh_dir.mkdir(mode=0o700)
        for path in (self.home, self.images):
            path.mkdir(mode=0o755)
        for name in ("config", "runtime", "cache", "data"):
            (self.home / name).mkdir(mode=0o700 if name == "runtime" else 0o755)
        for path in [self.home, self.images, *self.home.iterdir()]:
            os.chown(path, self.uid, self.gid)
        self.port = free_port()
        self._write_ssh_files()
        self.start_sshd()
        self.start_daemon()
        self.define_pool()
        self.setup_seconds = time.monotonic() - started

    def _write_ssh_files(self) -> None:
        ssh = self.ssh_dir
        for key in ("host_key", "client_key"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(ssh / key)],
                check=True,
            )
        # sshd reads it as the user, so not in the root-only ssh dir.
        authorized = self.base / "authorized_keys"
        authorized.write_text((ssh / "client_key.pub").read_text())
        authorized.chmod(0o644)
        host_pub = (ssh / "host_key.pub").read_text().split()
        # The host key is known beforehand, so the client verifies it for real.
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        env_line = " ".join(f"{k}={v}" for k, v in self.xdg.items())
        (ssh / "sshd_config").write_text(
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {ssh / 'host_key'}\n"
            f"PidFile {self.sshd_pid_file}\n"
            f"AuthorizedKeysFile {authorized}\n"
            f"AllowUsers {USER}\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            # No PAM (the machine's stack is not ours to rely on); StrictModes off because the
            # key files are root's, in a directory the user cannot read.
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin no\n"
            # The session daemon's dirs: the remote end (virt-ssh-helper) finds its socket,
            # and spawns it again there when it is gone.
            f"SetEnv {env_line}\n"
            "LogLevel ERROR\n"
        )
        (ssh / "ssh_config").write_text(
            "Host *\n"
            f"  IdentityFile {ssh / 'client_key'}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {ssh / 'known_hosts'}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 5\n"
            "  ServerAliveInterval 2\n"
            "  ServerAliveCountMax 2\n"
            "  LogLevel ERROR\n"
        )
        wrapper = ssh / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {ssh / "ssh_config"} "$@"\n')
        wrapper.chmod(0o700)

    def start_sshd(self) -> None:
        if not PRIVSEP_DIR.exists():
            PRIVSEP_DIR.mkdir(mode=0o755)
            (self.base / "made-privsep-dir").touch()
        log = self.ssh_dir / "sshd.log"
        subprocess.run([SSHD, "-f", str(self.ssh_dir / "sshd_config"), "-E", str(log)], check=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.sshd_running():
            if time.monotonic() > deadline:
                raise AssertionError(f"the second host's sshd did not start; see {log}")
            time.sleep(0.05)
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the second host's sshd does not listen on {self.port}")
            time.sleep(0.05)

    def sshd_running(self) -> bool:
        return _owned_pid(self.sshd_pid_file, "sshd", 0) is not None

    def stop_sshd(self) -> None:
        """The host's network goes away: new connections are refused (the sessions that
        exist end with their sshd child processes only when those are killed too)."""
        _stop(self.sshd_pid_file, "sshd", 0)

    def start_daemon(self) -> None:
        """Start the user's session libvirtd (the same the transport would spawn), and wait
        until it answers over ssh."""
        if self.daemon_pid() is None:
            subprocess.run(
                ["runuser", "-u", USER, "--", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
                + [f"{k}={v}" for k, v in self.xdg.items()]
                + ["libvirtd", "--daemon"],
                check=True,
                cwd="/",
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the second host does not answer at {self.uri}") from exc
                time.sleep(0.2)
                continue
            conn.close()
            return

    def ensure_up(self) -> None:
        """Bring back whatever a test took away (the sshd, the daemon)."""
        if not self.sshd_running():
            self.start_sshd()
        self.start_daemon()

    def daemon_pid(self) -> int | None:
        return _owned_pid(self.libvirtd_pid_file, "libvirtd", self.uid)

    def kill_daemon(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """The host goes away: its libvirtd dies (its guests' QEMU keeps running)."""
        if not _stop(self.libvirtd_pid_file, "libvirtd", self.uid, sig):
            raise AssertionError("the second host's libvirtd was not running")

    def define_pool(self) -> None:
        """The directory storage pool over the host's images, defined and running (again)."""
        conn = self.open()
        try:
            # Listed rather than looked up: a failed lookup prints libvirt's error on stderr.
            found = [p for p in conn.listAllStoragePools(0) if p.name() == POOL_NAME]
            if found:
                pool = found[0]
            else:
                pool = conn.storagePoolDefineXML(
                    f"<pool type='dir'><name>{POOL_NAME}</name>"
                    f"<target><path>{self.images}</path></target></pool>"
                )
            if not pool.isActive():
                pool.create(0)
        finally:
            conn.close()

    def open(self) -> libvirt.virConnect:
        return libvirt.open(self.uri)

    def virsh(self, *args: str) -> str:
        return subprocess.run(
            ["virsh", "-c", self.uri, *args], check=True, capture_output=True, text=True
        ).stdout

    def tear_down(self) -> None:
        """Guests destroyed and undefined, daemons stopped, files removed."""
        if self.base.exists() and self.sshd_running():
            if self.daemon_pid() is None:
                with contextlib.suppress(AssertionError):
                    self.start_daemon()
            if self.daemon_pid() is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self.remove_all_guests()
        stop_processes(self.base, self.uid)
        shutil.rmtree(self.base, ignore_errors=True)
        with contextlib.suppress(OSError):
            ROOT.rmdir()  # only when no other run uses it

    # -- guests --------------------------------------------------------------------------------

    def start_guest(self, *, memory_mib: int = 128, disk_size_mib: int = 32) -> HostGuest:
        """Define and start a counter guest on this host (its files in the host's pool)."""
        kernel, initrd = self.images / "vmlinuz", self.images / "initrd.img"
        if not initrd.exists():
            source = guest_source_dir()
            for name in ("vmlinuz", "initrd.img"):
                shutil.copyfile(source / name, self.images / name)
                (self.images / name).chmod(0o644)
        name = f"{DOMAIN_PREFIX}{uuid.uuid4().hex[:6]}"
        disk = self.images / f"{name}.qcow2"
        serial = self.images / f"{name}.log"
        create_disk(disk, disk_size_mib)
        os.chown(disk, self.uid, self.gid)
        xml = domain_xml(
            name, kernel=kernel, initrd=initrd, disk=disk, serial_log=serial, memory_mib=memory_mib
        )
        guest = HostGuest(name, disk, serial)
        self.guests.append(guest)
        conn = self.open()
        try:
            conn.defineXML(xml).create()
        finally:
            conn.close()
        wait_for_counter(serial, after_offset=0, timeout=BOOT_TIMEOUT)
        return guest

    def remove_all_guests(self) -> None:
        conn = self.open()
        try:
            for dom in conn.listAllDomains(0):
                if not dom.name().startswith(DOMAIN_PREFIX):
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(
                    libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                )
        finally:
            conn.close()
        self.guests.clear()


def guest_source_dir() -> Path:
    path = Path(os.environ.get("SNAPBOT_GUEST_DIR", ".build/guest")).resolve()
    if not (path / "initrd.img").exists():
        raise AssertionError(f"no test guest in {path}: build it with tests/system/guest/build.sh")
    return path


def stop_processes(base: Path, uid: int) -> None:
    """Stop what a run's second host left running, each by its pid file: the sshd (root's),
    the session libvirtd and virtlogd (the user's), and the QEMUs of its guests."""
    run = base / "home" / "runtime" / "libvirt"
    _stop(base / "ssh" / "sshd.pid", "sshd", 0)
    _stop(run / "libvirtd.pid", "libvirtd", uid)
    for pid_file in sorted((run / "qemu" / "run").glob("*.pid")):
        _stop(pid_file, "qemu-system-x86_64", uid, signal.SIGKILL)
    _stop(run / "virtlogd.pid", "virtlogd", uid)
    if (base / "made-privsep-dir").exists():
        with contextlib.suppress(OSError):
            PRIVSEP_DIR.rmdir()  # only if empty: a system sshd may have come to use it


def sweep_dead_runs() -> list[str]:
    """Remove the second hosts of runs that died before their clean-up (only those whose
    pytest process is gone)."""
    swept: list[str] = []
    if not ROOT.exists():
        return swept
    try:
        uid = pwd.getpwnam(USER).pw_uid
    except KeyError:
        uid = -1
    for path in sorted(ROOT.iterdir()):
        try:
            owner = (path / OWNER_FILE).read_text().strip()
        except OSError:
            continue
        pid = int(owner.split()[0]) if owner.split()[0].isdigit() else 0
        if _process_identity(pid) == owner:
            continue
        stop_processes(path, uid)
        shutil.rmtree(path, ignore_errors=True)
        swept.append(f"second host {path}")
    return swept


def new_host() -> RemoteHost:
    uid, gid = ensure_user()
    return RemoteHost(ROOT / daemon.SESSION, uid, gid)
