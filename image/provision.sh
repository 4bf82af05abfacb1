#!/bin/bash
# Make a Debian-based root into a dropkit kit: the agent in a virtualenv, its user and units, the
# default config and manifest, udev rules, the power-off rule, the kit's access point and the
# first-boot unit. The Raspberry Pi image (pi-gen stage) and the VM test image both run this, so
# the path the boot test covers is the one that ships.
#
# Usage, as root inside the target root (a chroot during the image build, with network):
#   provision.sh DROPKIT_WHEEL
# The systemd units are read from ../systemd beside this directory, as in the checkout.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
files=$here/files
units=$here/../systemd
wheel=$1
venv=/opt/dropkit/venv

runtime_packages=(
  python3 python3-venv        # the agent's virtualenv
  dbus polkitd                # systemctl poweroff from the agent's user (logind asks polkit)
  network-manager dnsmasq-base wpasupplicant  # the kit's access point, DHCP and DNS
  libusb-1.0-0                # USB receipt printers through python-escpos and pyusb
)
# evdev has no wheel on PyPI (nor lgpio for every Python): pip compiles them, then the compiler
# goes again.
build_packages=(gcc libc6-dev linux-libc-dev python3-dev)

say() { printf 'provision: %s\n' "$*"; }

not_installed() {
  local package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
      || printf '%s\n' "$package"
  done
}

export DEBIAN_FRONTEND=noninteractive
apt-get -q update
# gpiozero's pin factory on Bookworm and the Pi 5 is lgpio. Raspberry Pi OS packages it, and
# the venv sees it through the system site-packages. Elsewhere (Debian: the VM test image) it
# comes from PyPI, built from source: its wheels stop short of every Python, and PYPI=1 makes
# its setup.py link in its own copy of liblgpio (SWIG makes the binding), as no distro ships
# that library.
venv_options=()
pypi_lgpio=()
if apt-cache show python3-lgpio >/dev/null 2>&1; then
  runtime_packages+=(python3-lgpio)
  venv_options+=(--system-site-packages)
else
  build_packages+=(swig)
  pypi_lgpio=(lgpio==0.2.2.0)
fi
mapfile -t build_only < <(not_installed "${build_packages[@]}")
say "installing Debian packages"
apt-get -qy install --no-install-recommends "${runtime_packages[@]}" "${build_packages[@]}"

say "installing dropkit into $venv"
python3 -m venv "${venv_options[@]}" "$venv"
pip_options=(--quiet --disable-pip-version-check)
[ -n "${PIP_CACHE_DIR:-}" ] || pip_options+=(--no-cache-dir)
PYPI=1 "$venv/bin/pip" install "${pip_options[@]}" "$wheel" "${pypi_lgpio[@]}"
ln -sf "$venv/bin/dropkit" /usr/local/bin/dropkit
if [ ${#build_only[@]} -gt 0 ]; then
  apt-get -qy purge --autoremove "${build_only[@]}"
fi
apt-get clean
rm -rf /var/lib/apt/lists/*

say "installing the kit's files"
install -D -m 0644 "$files/firstboot.py" /opt/dropkit/lib/firstboot.py
install -D -m 0644 "$files/portal.py" /opt/dropkit/lib/portal.py
install -D -m 0644 "$files/dropkit-ap.nmconnection.in" /opt/dropkit/share/dropkit-ap.nmconnection.in
install -D -m 0644 "$files/sysusers.conf" /etc/sysusers.d/dropkit.conf
systemd-sysusers /etc/sysusers.d/dropkit.conf
install -D -m 0644 "$files/udev.rules" /etc/udev/rules.d/70-dropkit.rules
install -D -m 0644 "$files/modules-load.conf" /etc/modules-load.d/dropkit.conf
install -D -m 0644 "$files/poweroff.rules" /etc/polkit-1/rules.d/50-dropkit-poweroff.rules
# The killpower hook (docs/power.md): runs [power] killpower_command at the end of a halt for power.
install -D -m 0755 "$files/dropkit-killpower" /usr/lib/systemd/system-shutdown/dropkit-killpower
install -D -m 0644 "$files/dnsmasq-portal.conf" \
  /etc/NetworkManager/dnsmasq-shared.d/dropkit-portal.conf
install -d -m 0750 -g dropkit /etc/dropkit
# A host may have put the drop's own config or manifest in place already: keep them.
for name in agent.toml manifest.toml; do
  [ -e "/etc/dropkit/$name" ] || install -m 0640 -g dropkit "$files/$name" "/etc/dropkit/$name"
done

for unit in dropkit-agent.service dropkit-firstboot.service dropkit-portal.socket \
    dropkit-portal.service; do
  install -D -m 0644 "$units/$unit" "/etc/systemd/system/$unit"
done
systemctl enable dropkit-agent.service dropkit-firstboot.service dropkit-portal.socket
say "done"
