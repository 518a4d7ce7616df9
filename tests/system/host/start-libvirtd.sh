#!/usr/bin/env bash
# Start libvirtd and virtlogd for the system tests, on a machine without systemd (CI sandboxes,
# containers). Idempotent: a daemon that already answers is left alone.
#
# Why each step: libvirtd running as root still chowns guest files to the libvirt-qemu user and
# refuses to start QEMU when that user, its group or the kvm group are missing; QEMU's log goes
# through virtlogd, so a domain cannot start without it; the sandbox has no SELinux/AppArmor
# labels to apply and no unprivileged user that can read /var/tmp, hence root and no security
# driver (facts verified on Debian 12, ../shared/reference/libvirt.md section 12).
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
URI="qemu:///system"

if virsh -c "$URI" version >/dev/null 2>&1; then
  exit 0
fi

getent group kvm >/dev/null || $SUDO groupadd --system kvm
getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  $SUDO useradd --system --gid libvirt-qemu --no-create-home --shell /usr/sbin/nologin libvirt-qemu
$SUDO mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/qemu /run/libvirt

QEMU_CONF=/etc/libvirt/qemu.conf
set_option() { # key value: replace an existing (possibly commented) line, else append
  local key=$1 value=$2
  if $SUDO grep -Eq "^[#[:space:]]*${key}[[:space:]]*=" "$QEMU_CONF"; then
    $SUDO sed -i -E "s|^[#[:space:]]*${key}[[:space:]]*=.*|${key} = ${value}|" "$QEMU_CONF"
  else
    echo "${key} = ${value}" | $SUDO tee -a "$QEMU_CONF" >/dev/null
  fi
}
set_option user '"root"'
set_option group '"root"'
set_option security_driver '"none"'

pgrep -x virtlogd >/dev/null || $SUDO virtlogd -d
# A libvirtd that runs but does not answer (stale after a crash) is restarted.
if pgrep -x libvirtd >/dev/null; then
  $SUDO pkill -x libvirtd || true
  sleep 1
fi
$SUDO rm -f /run/libvirt/libvirtd.pid /var/run/libvirtd.pid
$SUDO libvirtd -d

for _ in $(seq 1 60); do
  if virsh -c "$URI" version >/dev/null 2>&1; then
    echo "libvirtd is up at $URI" >&2
    exit 0
  fi
  sleep 0.5
done
echo "libvirtd did not answer at $URI within 30 s; see /var/log/libvirt" >&2
exit 1
