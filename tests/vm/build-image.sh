#!/bin/bash
# The image layer of the VM test image: a copy of the cached stage layer (build-stage.sh: the
# base provisioned by the dropkit pi-gen stage) with this checkout's dropkit wheel installed
# into the kit's virtualenv by the kit's own pip, then the disk. The stage runs only when what
# it installs changes (provisioning, units, dependencies in pyproject.toml); a change to the
# agent's code costs this step alone, seconds natively and a minute or two for arm64 under
# qemu-user, instead of the whole provisioning (about 25 minutes for arm64).
# Usage: build-image.sh STAGE_DIR OUT_DIR   (needs root; PYTHON: the interpreter whose pip
# builds the dropkit wheel; no network: the wheel's dependencies are in the stage already)
# Writes OUT_DIR/vmlinuz, OUT_DIR/initrd.img and OUT_DIR/root.img (ext4, the whole root).
set -euo pipefail

stage=$(realpath "$1")
out=$(realpath "$2")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/../.." && pwd)
root=$out/rootfs
staging=/tmp/dropkit-wheel # inside the root, removed before the disk is made
venv=/opt/dropkit/venv

mounted=()
cleanup() {
  local index
  for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
    umount -l "${mounted[index]}" 2>/dev/null || true
  done
  rm -rf "$root"
}
trap cleanup EXIT

started=$SECONDS
cp -a "$stage/rootfs" "$root"
"$checkout/image/build-wheel.sh" "$root$staging"
wheel=$(basename "$root$staging"/dropkit-*.whl)
for target in proc dev; do
  mount --bind "/$target" "$root/$target"
  mounted+=("$root/$target")
done
# The same wheel the stage would install, by the same pip (its .pyc files made by the kit's own
# Python): only dropkit itself is replaced; its dependencies are the stage's.
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 chroot "$root" \
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-index \
  --no-deps --force-reinstall "$staging/$wheel"
for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do umount "${mounted[index]}"; done
mounted=()
rm -rf "$root$staging"
echo "image: dropkit installed in $((SECONDS - started)) s"

cp "$stage/vmlinuz" "$stage/initrd.img" "$out/"
size_mb=$(($(du -sm "$root" | cut -f1) + 400))
rm -f "$out/root.img"
truncate -s "${size_mb}M" "$out/root.img"
mkfs.ext4 -q -F -L dropkit-root -d "$root" "$out/root.img"
echo "image: done in $((SECONDS - started)) s (root $((size_mb - 400)) MB)"
