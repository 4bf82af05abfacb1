#!/bin/bash
# pi-gen: this stage starts from the previous stage's root (Raspberry Pi OS Lite, stage2).
set -euo pipefail
if [ ! -d "${ROOTFS_DIR}" ]; then
  copy_previous
fi
