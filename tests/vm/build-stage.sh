#!/bin/bash
# The stage layer of the VM test image: the cached base (build-base.sh) made into a kit by the
# dropkit pi-gen stage, assembled and run as the Raspberry Pi image build runs it
# (image/assemble-stage.sh, then the stage's own scripts through run-pi-gen-stage.sh:
# image/provision.sh and the Pi settings), plus the test runner (test image only) that runs the
# host's script from the 9p share at boot and powers the VM off. build-image.sh then puts the
# checkout's dropkit wheel into a copy of it and makes the disk.
# Usage: build-stage.sh BASE_ROOTFS OUT_DIR   (needs root and the network; PYTHON: the
# interpreter whose pip builds the dropkit wheel)
# Writes OUT_DIR/rootfs (the provisioned root), OUT_DIR/vmlinuz and OUT_DIR/initrd.img.
set -euo pipefail

base=$(realpath "$1")
out=$(realpath "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
root=$out/rootfs
stage=$out/stage-dropkit
host_ca=/tmp/dropkit-host-ca.crt # inside the root, removed before the image is made

mounted=()
cleanup() {
  local index
  for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
    umount -l "${mounted[index]}" 2>/dev/null || true
  done
  rm -rf "$stage"
}
trap cleanup EXIT
mount_into_root() { # mount_into_root TYPE SOURCE TARGET [OPTIONS]
  mount -t "$1" ${4:+-o "$4"} "$2" "$root$3"
  mounted+=("$root$3")
}

started=$SECONDS
"$checkout/image/assemble-stage.sh" "$stage" >"$out/stage.log" 2>&1
cp -a "$base" "$root"
# The Pi's firmware partition, which a Debian root lacks: the stage's Pi settings land in its
# config.txt (the boot test reads them back).
mkdir -p "$root/boot/firmware"
touch "$root/boot/firmware/config.txt"
mount_into_root proc proc /proc
mount_into_root sysfs sys /sys
mount_into_root devtmpfs dev /dev
mount_into_root devpts devpts /dev/pts gid=5,mode=620,ptmxmode=666
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Daemons installed in the chroot must not start there.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
# pip in the chroot trusts what the host trusts (a TLS-inspecting proxy's CA, say).
cp /etc/ssl/certs/ca-certificates.crt "$root$host_ca"
PIP_CERT=$host_ca "$here/run-pi-gen-stage.sh" "$stage" "$base" "$root"
echo "image: provisioned by the pi-gen stage in $((SECONDS - started)) s"

chroot_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME=/root LANG=C.UTF-8)
# The test runner, and what makes the root boot as a fresh card would.
install -D -m 0755 "$here/vmtest-runner.sh" "$root/usr/local/lib/vmtest/runner.sh"
install -D -m 0644 "$here/vmtest-runner.service" "$root/etc/systemd/system/vmtest-runner.service"
"${chroot_env[@]}" chroot "$root" systemctl enable vmtest-runner.service
# No login prompt on the serial console (a PC's or an Arm board's UART): it is the test's log.
"${chroot_env[@]}" chroot "$root" systemctl mask serial-getty@ttyS0.service \
  serial-getty@ttyAMA0.service
# An empty machine id is made at boot, as on a fresh card; "uninitialized" would also apply
# every unit preset (networkd, resolved...) on the first boot.
: >"$root/etc/machine-id"
echo dropkit >"$root/etc/hostname"
rm -f "$root$host_ca" "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"

for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do umount "${mounted[index]}"; done
mounted=()
kernel=$(ls "$root/lib/modules")
cp "$root/boot/vmlinuz-$kernel" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kernel" "$out/initrd.img"
echo "stage: done in $((SECONDS - started)) s (root $(du -sm "$root" | cut -f1) MB)"
