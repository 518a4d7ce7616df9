#!/bin/busybox sh
# /init of the counter guest. Every second: read the disk counter, count up in memory, write the
# new value to the disk and flush it (down to the image file), then print both. Writing before printing means the last
# line a test has read is always on the disk, even if the VM is killed right after.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
  insmod "/lib/modules/$m.ko"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -b /dev/vda ] || echo "SNAPBOT-NO-DISK"

read_disk() {
  v=$(head -c 16 /dev/vda 2>/dev/null | tr -dc '0-9')
  case "$v" in '' ) echo 0 ;; *) echo $((10#$v)) ;; esac
}

# snapbot_fill=N on the kernel command line: hold N MiB of non-zero data in memory (rootfs is
# RAM), so saving and loading the memory state take seconds, a window for fault tests. One
# random MiB repeated: no page is zero, which QEMU would skip, and no slow urandom under TCG.
fill=$(sed -n 's/.*snapbot_fill=\([0-9]*\).*/\1/p' /proc/cmdline)
if [ -n "$fill" ] && [ "$fill" -gt 0 ]; then
  head -c 1048576 /dev/urandom >/fill.1
  i=0
  while [ $i -lt "$fill" ]; do
    cat /fill.1
    i=$((i + 1))
  done >/fill
  echo "SNAPBOT-FILLED mib=$fill"
fi

boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
mem=$(read_disk)
echo "SNAPBOT-BOOTED boot=$boot disk=$mem"
while true; do
  disk=$(read_disk)
  mem=$((mem + 1))
  # fsync, not sync: sync(2) writes a raw block device's pages but sends the disk no flush, so
  # QEMU would keep the qcow2 metadata in its cache and a host-side read of the image would
  # not see the value; fsync on /dev/vda issues the flush.
  printf '%015d\n' "$mem" | dd of=/dev/vda bs=16 count=1 conv=notrunc,fsync 2>/dev/null
  echo "SNAPBOT-COUNTER mem=$mem disk=$disk boot=$boot"
  sleep 1
done
