# Sourced by ./dropkit and ./run-tests: make the virtualenv and install what is missing.
# On a fresh Debian or Raspberry Pi OS machine, run as root, it also installs the Debian packages
# it needs; as another user it says which ones to install.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
apt_updated=""

say() { printf 'dropkit-setup: %s\n' "$*" >&2; }

apt_install() {
  # apt_install PACKAGE...: install the Debian packages that are not installed yet.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    say "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
    return 1
  fi
  say "installing ${missing[*]}"
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

find_python() {
  local py
  for py in python3 python3.13 python3.12 python3.11; do
    if command -v "$py" >/dev/null \
        && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$py"; return 0
    fi
  done
  return 1
}

ensure_venv() {
  # ensure_venv [EXTRAS]: the virtualenv with dropkit installed with its [EXTRAS] dependencies;
  # without an argument hq,ops (a laptop runs the kit, HQ, watch and the drills), with "" none.
  local extra=${1-hq,ops} python stamp want key
  if [ ! -x "$venv/bin/python" ]; then
    python=$(find_python) || { apt_install python3 python3-venv && python=$(find_python); } \
      || { say "needs Python 3.11 or newer"; return 1; }
    if ! "$python" -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      apt_install python3-venv && "$python" -m venv "$venv"
    fi
  fi
  # One line per extras installed from this pyproject.toml (./dropkit and ./run-tests in turn
  # do not reinstall each time); a changed pyproject.toml starts the list again.
  stamp="$venv/.dropkit-installed"
  key=$(sha256sum < "$root/pyproject.toml" | cut -c1-16)
  want="$key ${extra}"
  if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
    say "installing dropkit${extra:+ [$extra]} into $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
      -e "$root${extra:+[$extra]}" >&2
    { grep -F "$key " "$stamp" 2>/dev/null || true; printf '%s\n' "$want"; } > "$stamp.new"
    mv "$stamp.new" "$stamp"
  fi
}
