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

# The command channel: the host writes lines to the second serial port (a unix socket on its
# side), results go to the console (ttyS0, the serial log the tests read). See guest.py for the
# host side and the exact content `write` puts on the disk.
#   write <offset_mib> <count_mib> <seed>  MiB m of the range holds "snapbot <seed> <m>\n"
#                                          repeated and cut at 1 MiB, so no 4 MiB chunk is zero
#                                          and none repeats across seeds or offsets
#   zero <offset_mib> <count_mib>          zeros over the range
# MiB 0 is refused: the counter owns its first bytes, and a write over them would race it.
disk_mib=$(($(cat /sys/block/vda/size 2>/dev/null || echo 0) / 2048))

is_number() {
  case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac
}

pattern() { # seed first_mib count_mib
  m=$2
  while [ "$m" -lt $(($2 + $3)) ]; do
    yes "snapbot $1 $m" | head -c 1048576
    m=$((m + 1))
  done
}

run_command() {
  op=$1 off=$2 cnt=$3 seed=$4
  if ! is_number "$off" || ! is_number "$cnt" || [ "$((10#$cnt))" -lt 1 ]; then
    echo "SNAPBOT-ERROR op=$op reason=usage"
    return
  fi
  off=$((10#$off)) cnt=$((10#$cnt))
  if [ "$off" -lt 1 ]; then
    echo "SNAPBOT-ERROR op=$op offset=$off count=$cnt reason=mib0-belongs-to-the-counter"
    return
  fi
  if [ $((off + cnt)) -gt "$disk_mib" ]; then
    echo "SNAPBOT-ERROR op=$op offset=$off count=$cnt reason=past-end-of-disk-$disk_mib"
    return
  fi
  # fullblock: a pipe hands dd short reads; whole MiB writes are fewer and faster under TCG.
  # fsync for the same reason as the counter's below: it makes QEMU flush to the image file.
  case "$op" in
  write)
    case "$seed" in '' | *[!A-Za-z0-9._-]*)
      echo "SNAPBOT-ERROR op=write offset=$off count=$cnt reason=seed-must-be-[A-Za-z0-9._-]+"
      return
      ;;
    esac
    if pattern "$seed" "$off" "$cnt" |
      dd of=/dev/vda bs=1048576 seek="$off" iflag=fullblock conv=notrunc,fsync 2>/dev/null; then
      echo "SNAPBOT-WROTE seed=$seed offset=$off count=$cnt"
    else
      echo "SNAPBOT-ERROR op=write offset=$off count=$cnt reason=dd-failed"
    fi
    ;;
  zero)
    if dd if=/dev/zero of=/dev/vda bs=1048576 seek="$off" count="$cnt" conv=notrunc,fsync \
      2>/dev/null; then
      echo "SNAPBOT-ZEROED offset=$off count=$cnt"
    else
      echo "SNAPBOT-ERROR op=zero offset=$off count=$cnt reason=dd-failed"
    fi
    ;;
  esac
}

# Opened and set raw here, before the boot line, not in the reader: a host that sends as soon
# as the guest counts must not race the reader's start (bytes reaching a closed port are lost).
# No echo, or the port would send every command back into the socket. Probed in a subshell
# first: a failed redirection on `exec` would end this shell, and with it the guest.
if (: <>/dev/ttyS1) 2>/dev/null && exec 3<>/dev/ttyS1 && stty -F /dev/ttyS1 raw -echo clocal; then
  while read -r op a b c <&3; do
    case "$op" in
    write | zero) run_command "$op" "$a" "$b" "$c" ;;
    '') ;;
    *) echo "SNAPBOT-ERROR op=$op reason=unknown-command" ;;
    esac
  done &
else
  echo "SNAPBOT-NO-COMMAND-PORT"
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
