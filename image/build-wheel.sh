#!/bin/bash
# The dropkit wheel that an image installs, built from a copy of the sources: building in the
# checkout would leave build/ there, and a stale build/lib ships modules the sources no longer
# have. The Pi image (build-pi-image.sh) and the VM test image both take their wheel from here.
#
# Usage: image/build-wheel.sh OUT_DIR   (PYTHON: the interpreter whose pip builds it)
set -euo pipefail

checkout=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(realpath -m "$1")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for name in pyproject.toml README.md agent hw simulators; do
  cp -r "$checkout/$name" "$scratch/"
done
find "$scratch" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$out"
"${PYTHON:-python3}" -m pip wheel --no-deps --quiet --wheel-dir "$out" "$scratch"
