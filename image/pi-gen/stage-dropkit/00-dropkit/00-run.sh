#!/bin/bash
# pi-gen step, on the build host: run image/provision.sh inside the Pi's root (the script the VM
# boot test runs too), then the Pi-only settings. build-pi-image.sh has put provision.sh, the
# units and the dropkit wheel under files/.
set -euo pipefail

staging=/tmp/dropkit-provision
install -d "${ROOTFS_DIR}${staging}/dist"
cp -r files/image files/systemd "${ROOTFS_DIR}${staging}/"
cp files/dist/dropkit-*.whl "${ROOTFS_DIR}${staging}/dist/"
wheel=$(basename files/dist/dropkit-*.whl)
on_chroot <<CHROOT
"${staging}/image/provision.sh" "${staging}/dist/${wheel}"
CHROOT
rm -rf "${ROOTFS_DIR:?}${staging}"

# The power chips sit on the Pi's I2C bus (i2c-dev is loaded by modules-load.d/dropkit.conf).
config_txt=${ROOTFS_DIR}/boot/firmware/config.txt
grep -q '^dtparam=i2c_arm=on' "${config_txt}" || echo 'dtparam=i2c_arm=on' >>"${config_txt}"
