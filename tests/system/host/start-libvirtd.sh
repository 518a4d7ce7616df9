#!/usr/bin/env bash
# Start the system tests' own libvirt daemon: a *session* libvirtd of a dedicated unprivileged
# user (snapbot-test), with its config, runtime, cache and data dirs under one directory
# (/var/tmp/snapbot-libvirt, or $SNAPBOT_TEST_LIBVIRT_DIR). Tests reach it as
#   qemu:///session?socket=$BASE/runtime/libvirt/libvirt-sock
# Idempotent: a daemon that already answers on that socket is left alone.
#
# Why not the system libvirtd: on a hypervisor with real VMs the suite must never restart or
# reconfigure a daemon it did not start (issue 7, defect 13). Why a separate user: a libvirtd
# started by root is always the privileged one (its paths under /run/libvirt, /etc/libvirt and
# /var/lib/libvirt are fixed and would clash with the system daemon's), while an unprivileged
# one keeps everything under its XDG dirs. root reaches its socket directly (verified on
# Debian 12, libvirt 9.0: ../shared/reference/libvirt.md section 14 uses the same session
# daemon over ssh). Its QEMU runs as snapbot-test under TCG, its virtlogd is its own (spawned
# on demand, exits when idle), and nothing outside $BASE is written except the user account.
set -euo pipefail

BASE=${SNAPBOT_TEST_LIBVIRT_DIR:-/var/tmp/snapbot-libvirt}
TEST_USER=snapbot-test
SOCK=$BASE/runtime/libvirt/libvirt-sock
PIDFILE=$BASE/runtime/libvirt/libvirtd.pid
URI="qemu:///session?socket=$SOCK"

answers() { virsh -c "$URI" version >/dev/null 2>&1; }

if answers; then
  exit 0
fi

# Creating the user and switching to it need root (CI runs as root).
[ "$(id -u)" -eq 0 ] || exec sudo -E -- bash "$0" "$@"

# A system account with no password and no login shell: it only owns the test daemon and the
# files its QEMU touches.
getent passwd "$TEST_USER" >/dev/null ||
  useradd --system --user-group --home-dir "$BASE" --no-create-home \
    --shell /usr/sbin/nologin "$TEST_USER"

mkdir -p "$BASE"/{config,runtime,cache,data}
chown -R "$TEST_USER:$TEST_USER" "$BASE"
chmod 755 "$BASE"
chmod 700 "$BASE/runtime"

# Our daemon may be running but not answering (hung, or half started): stop that one, found by
# its own pid file and checked to be libvirtd of our user, never by name.
if [ -f "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(stat -c %U "/proc/$pid" 2>/dev/null || true)" = "$TEST_USER" ] &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "libvirtd" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
fi

# A clean environment: the daemon derives every path from these, and nothing of the caller's
# (a developer's XDG dirs, LIBVIRT_DEFAULT_URI) may leak in.
(cd / && runuser -u "$TEST_USER" -- env -i \
  HOME="$BASE" \
  PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  XDG_CONFIG_HOME="$BASE/config" \
  XDG_RUNTIME_DIR="$BASE/runtime" \
  XDG_CACHE_HOME="$BASE/cache" \
  XDG_DATA_HOME="$BASE/data" \
  libvirtd --daemon)

for _ in $(seq 1 60); do
  if answers; then
    echo "test libvirtd is up at $URI" >&2
    exit 0
  fi
  sleep 0.5
done
echo "the test libvirtd did not answer at $URI within 30 s; see $BASE/cache/libvirt/libvirtd.log" >&2
exit 1
