#!/bin/busybox sh
# The guest's /init for bench/coldstart.mjs (ttyS0 is both its console and
# the host's line in). Each "coldstart: ..." line is a mark the host
# timestamps as it arrives. The init loads the kernel's modules, then reads
# the image's run spec from the console (lines up to "end": the host sends
# it once the disk is made), waits for /dev/vda (attached at start, or
# hot-plugged when the disk is ready), mounts it read-only as EROFS under
# an overlay with a tmpfs upper and runs the spec with /bin/agent.
/bin/busybox mkdir -p /proc /sys /dev /lower /ovl /mnt
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
stty raw -echo
echo "coldstart: init"
for m in $(cat /modules.order); do
  insmod /lib/modules/$m.ko || echo "coldstart: insmod $m failed"
done
echo "coldstart: waiting"
: >/spec
while IFS= read -r line; do
  [ "$line" = end ] && break
  echo "$line" >>/spec
done
echo "coldstart: spec"
while [ ! -b /dev/vda ]; do usleep 10000; done
echo "coldstart: disk"
fail() {
  echo "coldstart: failed: $1"
  dmesg | tail -n 30
  poweroff -f
}
mount -t erofs -o ro /dev/vda /lower || fail "mount -t erofs -o ro /dev/vda"
mount -t tmpfs tmpfs /ovl && mkdir /ovl/upper /ovl/work || fail "tmpfs upper"
mount -t overlay overlay -o lowerdir=/lower,upperdir=/ovl/upper,workdir=/ovl/work /mnt || fail "overlay"
echo "coldstart: mounted"
/bin/agent /spec /mnt
echo "coldstart: exit $?"
poweroff -f
