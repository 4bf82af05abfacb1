#!/bin/bash
# Test image only: mount the host's 9p share, run its run.sh as root, leave its output and exit
# status on the share, then power the VM off. A script may power the VM off itself, in which case
# no exit status is written.
set -euo pipefail

share=/mnt/vmshare
console() { echo "VMTEST: $*" >/dev/console; }

mkdir -p "$share"
# The share's virtio channel can come after this unit starts ("no channels available for device
# vmshare"): wait for the 9p driver to list its tag (NUL-ended), for at most a minute.
for _ in $(seq 120); do
  grep -qsa vmshare /sys/bus/virtio/drivers/9pnet_virtio/virtio*/mount_tag && break
  sleep 0.5
done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 vmshare "$share"; then
  console "no 9p share"
  systemctl poweroff --no-block
  exit 1
fi
console "run.sh start at $(cut -d' ' -f1 /proc/uptime) s"
status=0
(cd "$share" && bash ./run.sh) >"$share/output.log" 2>&1 || status=$?
echo "$status" >"$share/rc"
sync
console "run.sh rc=$status at $(cut -d' ' -f1 /proc/uptime) s; runner powering off"
systemctl poweroff --no-block
