#!/bin/sh
# /init of the test initramfs built by test/harness/initramfs.ts. Runs as PID 1 under busybox:
# mounts the pseudo filesystems, loads the vfio modules listed in /etc/vfio-ts/modules (already
# decompressed on the host), runs /guest.sh, prints the end marker with its exit status and
# powers off (QEMU runs with -no-reboot, so power-off ends QEMU).
export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root TERM=dumb
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /dev/pts /dev/shm /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
nonce=$(cat /etc/vfio-ts/nonce)
if [ -f /etc/vfio-ts/modules ]; then
  while read -r m; do
    [ -n "$m" ] || continue
    insmod "/lib/modules/$m" || echo "vfio-ts-init: insmod $m failed"
  done </etc/vfio-ts/modules
fi
echo "@@VFIO-TS-GUEST-BEGIN $nonce@@"
cd /
if [ -f /etc/vfio-ts/out-disk ]; then
  # The output also goes to the virtio disk whose serial the file names: the output at byte
  # 4096, then the line "VFIOTS-GUEST <nonce> <status> <length>" at byte 0, each synced, so a
  # guest stopped mid-write leaves no header. The console drops bytes under load
  # (test/harness/qemu.ts reads the disk back). tee keeps the console live for debugging.
  ( /bin/sh /guest.sh </dev/null; echo $? >/tmp/.vfio-ts-rc ) 2>&1 | tee /tmp/.vfio-ts-out
  rc=$(cat /tmp/.vfio-ts-rc 2>/dev/null || echo 255)
  want=$(cat /etc/vfio-ts/out-disk)
  for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = "$want" ] || continue
    dev="/dev/${b##*/}"
    dd if=/tmp/.vfio-ts-out of="$dev" bs=4096 seek=1 conv=notrunc,fsync 2>/dev/null &&
      printf 'VFIOTS-GUEST %s %s %s\n' "$nonce" "$rc" "$(wc -c </tmp/.vfio-ts-out)" |
      dd of="$dev" conv=notrunc,fsync 2>/dev/null || echo "vfio-ts-init: writing $dev failed"
  done
else
  /bin/sh /guest.sh </dev/null
  rc=$?
fi
echo "@@VFIO-TS-GUEST-END $nonce status=$rc@@"
sync
poweroff -f
# Not reached; if poweroff fails, PID 1 exiting panics the kernel and panic=-1 ends QEMU.
