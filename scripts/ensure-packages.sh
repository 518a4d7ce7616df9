#!/usr/bin/env bash
# Install the Debian/Ubuntu packages named as arguments that are not installed yet.
# Uses sudo when not root; runs apt-get update once, only if something is missing.
set -euo pipefail
missing=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "Installing system packages: ${missing[*]}" >&2
# The packages' own services (the system sshd, libvirtd, a PostgreSQL cluster) must not start:
# the tests start private instances of their own. policy-rc.d saying 101 ("not allowed") holds
# them back during the install; it is removed afterwards unless it was there before.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
