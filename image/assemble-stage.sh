#!/bin/bash
# Assemble the dropkit pi-gen stage: image/pi-gen/stage-dropkit with what its step installs
# (provision.sh and its files, the systemd units, the dropkit wheel) under 00-dropkit/files/.
# build-pi-image.sh hands the result to pi-gen; the VM test image runs the same stage against
# its Debian root (tests/vm/build-image.sh), so both get their files from here.
#
# Usage: image/assemble-stage.sh STAGE_DIR   (PYTHON: the interpreter whose pip builds the wheel)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
checkout=$(cd "$here/.." && pwd)
stage=$(realpath -m "$1")
files=$stage/00-dropkit/files

rm -rf "$stage"
mkdir -p "$(dirname "$stage")"
cp -r "$here/pi-gen/stage-dropkit" "$stage"
mkdir -p "$files/image" "$files/dist"
cp -r "$here/provision.sh" "$here/files" "$files/image/"
cp -r "$checkout/systemd" "$files/"
"$here/build-wheel.sh" "$files/dist"
