#!/bin/bash
# Run one pi-gen stage against a root the way pi-gen's build.sh does (run_stage and
# run_sub_stage, with its on_chroot and copy_previous), without the rest of pi-gen: the VM
# test image runs the dropkit stage (image/pi-gen/stage-dropkit, assembled by
# image/assemble-stage.sh) on its Debian root, so the stage's own scripts make the test image.
# Handles what pi-gen runs in a sub-stage: NN-debconf, NN-packages(-nr), NN-run.sh and
# NN-run-chroot.sh (not NN-patches, which the dropkit stage has none of).
#
# Usage: run-pi-gen-stage.sh STAGE_DIR PREV_ROOTFS_DIR ROOTFS_DIR
#   the chroot gets PATH, HOME, LANG and, when set, PIP_CERT (the host's CA bundle, in-root).
set -euo pipefail

STAGE_DIR=$(realpath "$1")
PREV_ROOTFS_DIR=$(realpath "$2")
ROOTFS_DIR=$(realpath -m "$3")
export STAGE_DIR PREV_ROOTFS_DIR ROOTFS_DIR
STAGE_WORK_DIR=$(dirname "$ROOTFS_DIR")
export STAGE_WORK_DIR

mounted=()
unmount_all() {
  local index
  for ((index = ${#mounted[@]} - 1; index >= 0; index--)); do
    umount -l "${mounted[index]}" 2>/dev/null || true
  done
}
trap unmount_all EXIT

on_chroot() { # pi-gen's: a script on standard input, run by bash -e inside the root
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 ${PIP_CERT:+PIP_CERT="$PIP_CERT"} chroot "$ROOTFS_DIR" /bin/bash -e
}
copy_previous() { # pi-gen's, with cp where pi-gen has rsync
  [ -d "$PREV_ROOTFS_DIR" ] || { echo "Previous stage rootfs not found" >&2; return 1; }
  mkdir -p "$ROOTFS_DIR"
  cp -a "$PREV_ROOTFS_DIR/." "$ROOTFS_DIR/"
}
export -f on_chroot copy_previous

packages() { grep -v '^[[:space:]]*#' "$1" | tr '\n' ' '; }

cd "$STAGE_DIR"
if [ -x prerun.sh ]; then
  ./prerun.sh
fi
# What pi-gen's on_chroot mounts, here once for the whole stage (a step's on_chroot runs in a
# child process, which could not leave the list of its mounts behind for the clean-up).
for target in proc dev dev/pts sys; do
  if ! mountpoint -q "$ROOTFS_DIR/$target"; then
    case $target in
      proc) mount -t proc proc "$ROOTFS_DIR/proc" ;;
      *) mount --bind "/$target" "$ROOTFS_DIR/$target" ;;
    esac
    mounted+=("$ROOTFS_DIR/$target")
  fi
done
for sub_stage in "$STAGE_DIR"/*/; do
  [ -f "$sub_stage/SKIP" ] && continue
  cd "$sub_stage"
  for step in {00..99}; do
    if [ -f "$step-debconf" ]; then
      printf 'debconf-set-selections <<SELEOF\n%s\nSELEOF\n' "$(cat "$step-debconf")" | on_chroot
    fi
    if [ -f "$step-packages-nr" ]; then
      echo "apt-get install --no-install-recommends -y $(packages "$step-packages-nr")" | on_chroot
    fi
    if [ -f "$step-packages" ]; then
      echo "apt-get install -y $(packages "$step-packages")" | on_chroot
    fi
    if [ -x "$step-run.sh" ]; then
      "./$step-run.sh"
    fi
    if [ -f "$step-run-chroot.sh" ]; then
      on_chroot <"$step-run-chroot.sh"
    fi
  done
done
echo "run-pi-gen-stage: $(basename "$STAGE_DIR") done"
