"""The VM test images: built or reused, cached, one per architecture.

The image is Debian trixie (amd64, or arm64 as on a Pi) made into a kit by
``image/provision.sh``, the script the Raspberry Pi image runs, plus a runner that executes a
script from the host once the VM boots (``vmtest-runner.sh``, booted by ``vmboot.py``). It is
cached under ``/var/cache/dropkit-vm`` (``$DROPKIT_VM_CACHE``) in three layers per
architecture, each keyed by a hash of what goes into it: the base (debootstrap and the gpio-sim
module, which rarely change), the stage (the base provisioned by the dropkit pi-gen stage: its
packages, the kit's virtualenv with its dependencies, units) and the image (the stage with this
checkout's dropkit wheel installed, and the disk). An
arm64 root is built on an amd64 host through qemu-user (binfmt_misc) and boots under
``qemu-system-aarch64 -M virt``, all in software.

Sessions from several checkouts share the cache: a build holds its architecture's lock, and a
layer a test process uses is held (a shared lock on its ``in-use`` file) so that no other build
removes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHECKOUT = Path(__file__).resolve().parents[2]
HERE = CHECKOUT / "tests" / "vm"
CACHE = Path(os.environ.get("DROPKIT_VM_CACHE", "/var/cache/dropkit-vm"))
# Host commands and the Debian packages that bring them.
BUILD_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs"}
# A foreign root's programs run in the chroot through qemu-user, registered with binfmt_misc
# ("F": the kernel holds the interpreter open, so the chroot needs no copy of it).
FOREIGN_BUILD_TOOLS = {"update-binfmts": "binfmt-support"}
BINFMT = Path("/proc/sys/fs/binfmt_misc")
KERNEL_OPTIONS = (
    "root=/dev/vda rw init=/lib/systemd/systemd panic=-1 "
    # Kernel messages cost dearly over an emulated serial port; systemd's status lines stay.
    "quiet systemd.show_status=1 mitigations=off"
)


class VmSetupError(RuntimeError):
    """The host cannot build or boot the VM; the message says what to do."""


@dataclass(frozen=True)
class Arch:
    """A guest architecture: Debian's name, the kernel's, and the QEMU that boots it."""

    name: str  # Debian's: amd64, arm64
    machine: str  # the kernel's (uname -m): x86_64, aarch64
    qemu: str
    qemu_package: str
    qemu_options: tuple[str, ...]
    console: str

    @property
    def foreign(self) -> bool:
        return platform.machine() != self.machine

    @property
    def kernel_command_line(self) -> str:
        return f"{KERNEL_OPTIONS} console={self.console}"


ARCHES = {
    "amd64": Arch("amd64", "x86_64", "qemu-system-x86_64", "qemu-system-x86", (), "ttyS0"),
    # A Pi's cores in software: -cpu max with the cheap stand-in for pointer authentication
    # (the architected QARMA hash costs TCG dearly and the guest cannot tell the difference).
    "arm64": Arch("arm64", "aarch64", "qemu-system-aarch64", "qemu-system-arm",
                  ("-machine", "virt", "-cpu", "max,pauth-impdef=on"), "ttyAMA0"),
}


@dataclass(frozen=True)
class VmImage:
    directory: Path
    arch: Arch = ARCHES["amd64"]

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.directory / "root.img"


def find_command(name: str) -> str | None:
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def ensure_host_tools(tools: dict[str, str]) -> None:
    """Install the Debian packages behind missing commands (as root), or say which are needed."""
    missing = sorted({package for command, package in tools.items() if not find_command(command)})
    if not missing:
        return
    if os.geteuid() != 0 or not find_command("apt-get"):
        raise VmSetupError(f"the VM tests need the Debian packages {' '.join(missing)}; as root: "
                           f"apt-get install --no-install-recommends {' '.join(missing)}")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-qqy", "--no-install-recommends", *missing]):
        done = subprocess.run(command, env=environment, capture_output=True, text=True)
        if done.returncode != 0:
            raise VmSetupError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def boot_tools(arch: Arch) -> dict[str, str]:
    return {arch.qemu: arch.qemu_package, "qemu-img": "qemu-utils"}


def ensure_binfmt(arch: Arch) -> None:
    """Let this host run ``arch``'s programs in a chroot: qemu-user registered with binfmt."""
    if not arch.foreign:
        return
    user = f"qemu-{arch.machine}"
    ensure_host_tools({**FOREIGN_BUILD_TOOLS, f"{user}-static": "qemu-user-static"})
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    entry = BINFMT / user
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        subprocess.run(["update-binfmts", "--enable", user], check=True, capture_output=True)
    flags = next((line for line in entry.read_text().splitlines() if line.startswith("flags:")),
                 "")
    if "F" not in flags:
        raise VmSetupError(f"binfmt {user} lacks the F flag ({flags!r}): a chroot cannot find "
                           f"its interpreter; reinstall qemu-user-static")


def _files_under(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from (child for child in sorted(path.rglob("*")) if child.is_file()
                        and "__pycache__" not in child.parts and child.suffix != ".pyc")
        else:
            yield path


def digest(paths: Iterable[Path], *, salt: str = "") -> str:
    """A short hash of the files' names (relative to the checkout) and contents."""
    hasher = hashlib.sha256(salt.encode())
    for path in _files_under(paths):
        hasher.update(str(path.relative_to(CHECKOUT)).encode() + b"\0")
        hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()[:16]


# What the stage installs beside dropkit's own code: the image's provisioning and units, and the
# dependencies named in pyproject.toml. A change here runs the pi-gen stage again.
STAGE_SOURCES = ("image", "systemd", "pyproject.toml")
WHEEL_SOURCES = ("pyproject.toml", "README.md", "agent", "hw", "simulators")  # build-wheel.sh


def base_key(arch: Arch) -> str:
    return digest([HERE / "build-base.sh"], salt=arch.name)


def stage_key(arch: Arch) -> str:
    return digest([HERE / "build-stage.sh", HERE / "run-pi-gen-stage.sh",
                   HERE / "vmtest-runner.sh", HERE / "vmtest-runner.service",
                   *(CHECKOUT / name for name in STAGE_SOURCES)], salt=base_key(arch))


def image_key(arch: Arch) -> str:
    return digest([HERE / "build-image.sh", CHECKOUT / "image" / "build-wheel.sh",
                   *(CHECKOUT / name for name in WHEEL_SOURCES)], salt=stage_key(arch))


@contextmanager
def _cache_lock(arch: Arch) -> Iterator[None]:
    """One architecture's layers, built or looked up by one process at a time."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f"{arch.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# A layer in use (its "in-use" file share-locked by a test process) is never pruned: sessions
# from other checkouts share the cache, and a persistent disk needs its image for every boot.
IN_USE = "in-use"
_held: dict[Path, IO[str]] = {}


def _hold(layer: Path) -> None:
    """Keep ``layer`` from being pruned for as long as this process runs."""
    if layer not in _held and (layer / IN_USE).exists():
        handle = (layer / IN_USE).open()
        fcntl.flock(handle, fcntl.LOCK_SH)
        _held[layer] = handle


def _in_use(layer: Path) -> bool:
    try:
        handle = (layer / IN_USE).open()
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def _run_logged(command: Sequence[str | Path], log: Path) -> None:
    with log.open("w") as out:
        done = subprocess.run([str(part) for part in command], stdout=out,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise VmSetupError(f"{Path(command[0]).name} failed (exit {done.returncode}); "
                           f"log in {log}:\n{tail}")


def _build_layer(arch: Arch, kind: str, key: str, build: Callable[[Path], None],
                 say: Callable[[str], None]) -> Path:
    """The cached ``CACHE/arch-kind-key`` directory, built (and unused older ones removed)."""
    final = CACHE / f"{arch.name}-{kind}-{key}"
    if final.is_dir():
        return final
    if os.geteuid() != 0:
        raise VmSetupError(f"building the VM {kind} needs root (debootstrap, chroot, mount): "
                           f"run the VM tests as root once to fill {CACHE}")
    ensure_host_tools(BUILD_TOOLS)
    ensure_binfmt(arch)
    partial = CACHE / f"{arch.name}-{kind}-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    started = time.monotonic()
    say(f"vm: building the {arch.name} {kind} {key} (cache {CACHE})")
    build(partial)
    (partial / IN_USE).touch()
    partial.rename(final)
    for stale in CACHE.glob(f"{arch.name}-{kind}-*"):
        if stale != final and not _in_use(stale):
            shutil.rmtree(stale, ignore_errors=True)
    say(f"vm: {arch.name} {kind} built in {time.monotonic() - started:.0f} s")
    return final


def _stage_layer(arch: Arch, say: Callable[[str], None]) -> Path:
    base = _build_layer(arch, "base", base_key(arch), lambda out: _run_logged(
        [HERE / "build-base.sh", arch.name, out], out / "build.log"), say)
    # The stage's wheel is built by this interpreter's pip (image/build-wheel.sh).
    return _build_layer(arch, "stage", stage_key(arch), lambda out: _run_logged(
        ["env", f"PYTHON={sys.executable}", HERE / "build-stage.sh", base / "rootfs", out],
        out / "build.log"), say)


def _image_layer(arch: Arch, stage: Path, say: Callable[[str], None]) -> VmImage:
    image = _build_layer(arch, "image", image_key(arch), lambda out: _run_logged(
        ["env", f"PYTHON={sys.executable}", HERE / "build-image.sh", stage, out],
        out / "build.log"), say)
    _hold(image)
    return VmImage(image, arch)


def build_or_reuse_image(say: Callable[[str], None] = print, *, arch: str = "amd64") -> VmImage:
    """The current VM image, from the cache or built (minutes, and for arm64 most of an hour
    from nothing; needs root). The image stays in the cache while this process runs."""
    guest = ARCHES[arch]
    with _cache_lock(guest):
        return _image_layer(guest, _stage_layer(guest, say), say)


def cached_image(arch: str, say: Callable[[str], None] = print) -> VmImage | None:
    """The current image for ``arch`` if the cache has it or its stage layer (then only this
    checkout's wheel goes in, which is quick), without building the base or the stage, nor
    waiting for another process's build of them (the lock is taken only once the stage is
    there, for the image layer)."""
    guest = ARCHES[arch]
    image = CACHE / f"{guest.name}-image-{image_key(guest)}"
    stage = CACHE / f"{guest.name}-stage-{stage_key(guest)}"
    if not (image.is_dir() or stage.is_dir()):
        return None
    with _cache_lock(guest):
        if image.is_dir() or stage.is_dir():
            return _image_layer(guest, stage, say)
    return None


def persistent_disk(image: VmImage, path: Path) -> Path:
    """A copy-on-write disk over the image that keeps what the VM writes, boot after boot."""
    ensure_host_tools(boot_tools(image.arch))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    str(image.disk), str(path)], check=True)
    return path
