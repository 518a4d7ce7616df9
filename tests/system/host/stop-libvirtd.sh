#!/usr/bin/env bash
# Stop the system tests' own libvirtd (started by start-libvirtd.sh) and its virtlogd, each by
# its pid file and only if that pid is still that program of the test user: never by name, so
# a system libvirtd on the same machine is never touched. With --purge, also remove the
# daemon's directory (its config, logs and any domain definitions left in it).
set -euo pipefail

BASE=${SNAPBOT_TEST_LIBVIRT_DIR:-/var/tmp/snapbot-libvirt}
TEST_USER=snapbot-test

[ "$(id -u)" -eq 0 ] || exec sudo -E -- bash "$0" "$@"

stop() { # program pidfile
  local program=$1 pidfile=$2 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(stat -c %U "/proc/$pid" 2>/dev/null || true)" = "$TEST_USER" ] &&
    [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$program" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      kill -0 "$pid" 2>/dev/null || return 0
      sleep 0.25
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

stop libvirtd "$BASE/runtime/libvirt/libvirtd.pid"
stop virtlogd "$BASE/runtime/libvirt/virtlogd.pid"
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$BASE"
fi
