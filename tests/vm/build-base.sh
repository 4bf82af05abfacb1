#!/bin/bash
# The base of the VM test image, built once and cached by the harness: Debian trixie (minbase)
# with the kernel, systemd and udev, which is what a Raspberry Pi OS Lite card starts from, plus
# the kernel modules the in-VM checks need that Debian's kernel leaves out, built out of tree.
# Usage: build-base.sh ARCH OUT_DIR   (ARCH: amd64 or arm64; needs root and the Debian mirror;
# writes OUT_DIR/rootfs). A foreign ARCH's programs run through qemu-user (binfmt_misc, set up
# by the harness), so arm64 builds on an amd64 host, slowly.
set -euo pipefail

arch=$1
out=$(realpath "$2")
root=$out/rootfs
build=$out/build # a copy of the rootfs with compiler and kernel source, never shipped
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$out"

cleanup() {
  umount "$build/proc" "$root/proc" 2>/dev/null || true
  rm -rf "$build"
}
trap cleanup EXIT

# The modules the in-VM checks need and Debian's kernel leaves out (gpio-sim on every
# architecture, i2c-stub on arm64), built out of tree against the kernel's own source and
# headers, in a throwaway copy of the root that has a compiler.
build_modules() { # build_modules MODULE...
  local kernel_version series source_tarball work module
  # shellcheck disable=SC2016 # a dpkg-query format, not a shell expression
  kernel_version=$(chroot "$root" dpkg-query -W -f '${Version}' "linux-image-$kernel")
  series=$(cut -d. -f1,2 <<<"$kernel")
  cp -a "$root" "$build"
  cp /etc/resolv.conf "$build/etc/resolv.conf"
  mount -t proc proc "$build/proc"
  chroot "$build" sh -c "apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive \
    apt-get install -qy --no-install-recommends linux-headers-$kernel \
    linux-source-$series=$kernel_version make gcc xz-utils >/dev/null"
  source_tarball=$(ls "$build"/usr/src/linux-source-*.tar.xz)
  mkdir -p "$root/lib/modules/$kernel/updates"
  for module in "$@"; do
    work=$build/root/$module
    mkdir -p "$work"
    case $module in
      gpio-sim)
        # gpio-sim needs irq_sim, which Debian also leaves out: link it into the module, and
        # use the exported generic_handle_irq() where irq_sim calls the unexported
        # irq_to_desc().
        tar -xJf "$source_tarball" -C "$work" --wildcards --strip-components=3 \
          '*/drivers/gpio/gpio-sim.c' '*/drivers/gpio/gpiolib.h' '*/kernel/irq/irq_sim.c'
        mv "$work/gpio-sim.c" "$work/gpio-sim-main.c"
        sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' \
          "$work/irq_sim.c"
        printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' >"$work/Kbuild"
        ;;
      i2c-stub)
        tar -xJf "$source_tarball" -C "$work" --wildcards --strip-components=3 \
          '*/drivers/i2c/i2c-stub.c'
        printf 'obj-m := i2c-stub.o\n' >"$work/Kbuild"
        ;;
    esac
    chroot "$build" make -s -C "/usr/src/linux-headers-$kernel" "M=/root/$module" modules
    cp "$work/$module.ko" "$root/lib/modules/$kernel/updates/"
  done
  chroot "$root" depmod -a "$kernel"
}

started=$SECONDS
debootstrap --arch="$arch" --variant=minbase --include="linux-image-$arch,systemd-sysv,udev,kmod" \
  trixie "$root" "$mirror" >"$out/debootstrap.log"
echo "base: debootstrap $((SECONDS - started)) s"

kernel=$(ls "$root/lib/modules")
missing=()
for module in gpio-sim i2c-stub; do
  [ -n "$(find "$root/lib/modules/$kernel" -name "$module.ko*")" ] || missing+=("$module")
done
if [ ${#missing[@]} -gt 0 ]; then
  build_modules "${missing[@]}"
  echo "base: ${missing[*]} built $((SECONDS - started)) s"
fi

# An initramfs with only what mounts the root (virtio disk, ext4) unpacks in a fraction of the
# time of Debian's "most" under software emulation.
sed -i -e 's/^MODULES=.*/MODULES=list/' -e 's/^COMPRESS=.*/COMPRESS=gzip/' \
  "$root/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
mount -t proc proc "$root/proc"
chroot "$root" update-initramfs -u -k "$kernel" >/dev/null
umount "$root/proc"

rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
echo "base: done in $((SECONDS - started)) s"
