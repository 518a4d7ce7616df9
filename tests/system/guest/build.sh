#!/usr/bin/env bash
# Build the counter guest for the system tests into OUT_DIR: vmlinuz (a Debian cloud kernel) and
# initrd.img (busybox-static plus the virtio block modules and a counter as /init).
# Idempotent: skipped when OUT_DIR holds a build of the same recipe (see the stamp).
#
# Why this guest: it boots under TCG in about a second with 256 MiB, needs no image download
# beyond one kernel package, and its counter (in memory and on disk) lets a test prove that a
# restore brought back both (../shared/reference/libvirt.md section 12).
set -euo pipefail

OUT=${1:?usage: build.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# The metapackage points at the current versioned kernel package; pin the build to that name.
KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
  awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$KPKG" ]; then
  # A fresh machine may have empty apt lists.
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
    awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
if [ -z "$KPKG" ]; then
  echo "build.sh: no linux-image-cloud-amd64 in the apt sources; add Debian's main archive" >&2
  exit 1
fi
STAMP="$KPKG $(cat "$0" "$HERE/init.sh" | sha256sum | cut -c1-16)"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] &&
  [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ]; then
  exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
# apt drops privileges to _apt for downloads; let it write into the directory.
mkdir -m 1777 "$WORK/deb"
(cd "$WORK/deb" && apt-get download -q "$KPKG" >/dev/null)
dpkg -x "$WORK"/deb/"$KPKG"_*.deb "$WORK/kernel"
KVER=${KPKG#linux-image-}
cp "$WORK/kernel/boot/vmlinuz-$KVER" "$OUT/vmlinuz.new"

ROOT="$WORK/initramfs"
mkdir -p "$ROOT"/{bin,dev,proc,sys,lib/modules}
cp /bin/busybox "$ROOT/bin/busybox"
MODULES=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk)
for mod in "${MODULES[@]}"; do
  src=$(find "$WORK/kernel/lib/modules/$KVER" -name "$mod.ko*" | head -n1)
  if [ -z "$src" ]; then
    echo "build.sh: module $mod not found in $KPKG" >&2
    exit 1
  fi
  case "$src" in
  *.ko.xz) xz -dc "$src" >"$ROOT/lib/modules/$mod.ko" ;;
  *.ko.zst) zstd -qdc "$src" >"$ROOT/lib/modules/$mod.ko" ;;
  *.ko.gz) gzip -dc "$src" >"$ROOT/lib/modules/$mod.ko" ;;
  *) cp "$src" "$ROOT/lib/modules/$mod.ko" ;;
  esac
done
install -m 0755 "$HERE/init.sh" "$ROOT/init"
(cd "$ROOT" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$OUT/initrd.img.new"

mv "$OUT/vmlinuz.new" "$OUT/vmlinuz"
mv "$OUT/initrd.img.new" "$OUT/initrd.img"
echo "$STAMP" >"$OUT/stamp"
echo "build.sh: guest built in $OUT ($KPKG)" >&2
