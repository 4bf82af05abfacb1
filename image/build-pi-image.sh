#!/bin/bash
# Build the kit's card image: Raspberry Pi OS Lite (trixie, arm64) from pi-gen, plus the dropkit
# stage (pi-gen/stage-dropkit), which runs provision.sh, the script the VM boot test runs too.
#
# Usage, as root:  image/build-pi-image.sh PI_GEN_DIR [WORK_DIR]
#   PI_GEN_DIR  a pi-gen checkout that builds trixie for arm64
#   WORK_DIR    where the stage and the pi-gen config are assembled (default /var/tmp/dropkit-pi)
# Environment:
#   KIT_WIFI_COUNTRY    the access point's regulatory domain, two letters (default GB)
#   KIT_ADMIN_SSH_KEY   a public key: SSH on, key only, for the user kitadmin (default: no SSH)
# The image lands in PI_GEN_DIR/deploy/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pi_gen=$(realpath "$1")
work=$(realpath -m "${2:-/var/tmp/dropkit-pi}")
stage=$work/stage-dropkit

[ -x "$pi_gen/build.sh" ] || { echo "build-pi-image: no pi-gen at $pi_gen" >&2; exit 2; }
"$here/assemble-stage.sh" "$stage"

# The admin account exists for SSH with a key; its password is random and shown nowhere, and
# pi-gen's first-boot rename wizard stays off so the console shows the kit's setup instead.
ssh_key=${KIT_ADMIN_SSH_KEY:-}
cat >"$work/config" <<EOF
IMG_NAME=dropkit
RELEASE=trixie
TARGET_HOSTNAME=dropkit
DEPLOY_COMPRESSION=xz
WPA_COUNTRY=${KIT_WIFI_COUNTRY:-GB}
FIRST_USER_NAME=kitadmin
FIRST_USER_PASS='$(head -c 18 /dev/urandom | base64)'
DISABLE_FIRST_BOOT_USER_RENAME=1
ENABLE_SSH=$([ -n "$ssh_key" ] && echo 1 || echo 0)
PUBKEY_SSH_FIRST_USER='${ssh_key}'
PUBKEY_ONLY_SSH=1
STAGE_LIST="stage0 stage1 stage2 ${stage}"
EOF
# Only the kit image is wanted, not the plain Lite image stage2 also exports.
touch "$pi_gen/stage2/SKIP_IMAGES"
cd "$pi_gen"
./build.sh -c "$work/config"
echo "build-pi-image: the card image is in $pi_gen/deploy/"
