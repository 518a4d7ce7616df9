#!/bin/busybox sh
# /init of the counter guest. Every second: read the disk counter, count up in memory, write the
# new value to the disk and flush it, then print both. Writing before printing means the last
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

boot=$(cut -c1-8 /proc/sys/kernel/random/boot_id)
mem=$(read_disk)
echo "SNAPBOT-BOOTED boot=$boot disk=$mem"
while true; do
  disk=$(read_disk)
  mem=$((mem + 1))
  printf '%015d\n' "$mem" | dd of=/dev/vda bs=16 count=1 conv=notrunc 2>/dev/null
  sync
  echo "SNAPBOT-COUNTER mem=$mem disk=$disk boot=$boot"
  sleep 1
done
