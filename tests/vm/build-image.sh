#!/bin/bash
# The VM test image: the cached base (build-base.sh) made into a kit by image/provision.sh, the
# same script the Raspberry Pi image runs, plus the test runner (test image only) that runs the
# host's script from the 9p share at boot and powers the VM off.
# Usage: build-image.sh BASE_ROOTFS DROPKIT_WHEEL OUT_DIR   (needs root and the network)
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.img and OUT_DIR/root.img (ext4, the whole root).
set -euo pipefail

base=$1
wheel=$2
out=$(realpath "$3")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
root=$out/rootfs
staging=/tmp/dropkit-provision # inside the root, removed before the image is made

mounted=()
cleanup() {
  local index
  for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
    umount -l "${mounted[index]}" 2>/dev/null || true
  done
  rm -rf "$root"
}
trap cleanup EXIT
mount_into_root() { # mount_into_root TYPE SOURCE TARGET [OPTIONS]
  mount -t "$1" ${4:+-o "$4"} "$2" "$root$3"
  mounted+=("$root$3")
}

started=$SECONDS
cp -a "$base" "$root"
mount_into_root proc proc /proc
mount_into_root sysfs sys /sys
mount_into_root devtmpfs dev /dev
mount_into_root devpts devpts /dev/pts gid=5,mode=620,ptmxmode=666
cp /etc/resolv.conf "$root/etc/resolv.conf"
# Daemons installed in the chroot must not start there.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"

mkdir -p "$root$staging/dist"
cp -r "$checkout/image" "$checkout/systemd" "$root$staging/"
cp "$wheel" "$root$staging/dist/"
# pip in the chroot trusts what the host trusts (a TLS-inspecting proxy's CA, say).
cp /etc/ssl/certs/ca-certificates.crt "$root$staging/host-ca.crt"
chroot_env=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  HOME=/root LANG=C.UTF-8 PIP_CERT="$staging/host-ca.crt")
"${chroot_env[@]}" chroot "$root" "$staging/image/provision.sh" \
  "$staging/dist/$(basename "$wheel")"
echo "image: provisioned in $((SECONDS - started)) s"

# The test runner, and what makes the root boot as a fresh card would.
install -D -m 0755 "$here/vmtest-runner.sh" "$root/usr/local/lib/vmtest/runner.sh"
install -D -m 0644 "$here/vmtest-runner.service" "$root/etc/systemd/system/vmtest-runner.service"
"${chroot_env[@]}" chroot "$root" systemctl enable vmtest-runner.service
# No login prompt on the serial console: it is the test's log.
"${chroot_env[@]}" chroot "$root" systemctl mask serial-getty@ttyS0.service
# An empty machine id is made at boot, as on a fresh card; "uninitialized" would also apply
# every unit preset (networkd, resolved...) on the first boot.
: >"$root/etc/machine-id"
echo dropkit >"$root/etc/hostname"
rm -rf "${root:?}$staging" "$root/usr/sbin/policy-rc.d"
: >"$root/etc/resolv.conf"

for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do umount "${mounted[index]}"; done
mounted=()
kernel=$(ls "$root/lib/modules")
cp "$root/boot/vmlinuz-$kernel" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kernel" "$out/initrd.img"
size_mb=$(($(du -sm "$root" | cut -f1) + 400))
rm -f "$out/root.img"
truncate -s "${size_mb}M" "$out/root.img"
mkfs.ext4 -q -F -L dropkit-root -d "$root" "$out/root.img"
echo "image: done in $((SECONDS - started)) s (root $((size_mb - 400)) MB)"
