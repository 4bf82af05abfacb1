"""The VM test image, built or reused, and booted under QEMU with systemd as init.

The image is Debian trixie (amd64) made into a kit by ``image/provision.sh``, the script the
Raspberry Pi image runs, plus a runner that executes a script from the host once the VM boots
(``vmtest-runner.sh``; files cross through a 9p share, the VM has no network). It is cached under
``/var/cache/dropkit-vm`` (``$DROPKIT_VM_CACHE``) in two layers, each keyed by a hash of what goes
into it: the base (debootstrap and the gpio-sim module, which rarely change) and the image (the
base plus provisioning, units and the dropkit source).

In a test::

    image = build_or_reuse_image()
    result = boot(image, "modprobe i2c-stub chip_addr=0x40 && ls /dev/i2c-*")
    result.output, result.returncode, result.console

From a shell, as root (the script's output is printed and its exit status returned)::

    .venv/bin/python -m tests.vm.vmboot [--file PATH]... [--disk DISK.qcow2] SCRIPT
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
HERE = CHECKOUT / "tests" / "vm"
CACHE = Path(os.environ.get("DROPKIT_VM_CACHE", "/var/cache/dropkit-vm"))
# Host commands and the Debian packages that bring them.
BUILD_TOOLS = {"debootstrap": "debootstrap", "mkfs.ext4": "e2fsprogs"}
BOOT_TOOLS = {"qemu-system-x86_64": "qemu-system-x86", "qemu-img": "qemu-utils"}
KERNEL_COMMAND_LINE = (
    "root=/dev/vda rw console=ttyS0 init=/lib/systemd/systemd panic=-1 "
    # Kernel messages cost dearly over an emulated serial port; systemd's status lines stay.
    "quiet systemd.show_status=1 mitigations=off"
)
SHARE_TAG = "vmshare"  # vmtest-runner.sh mounts this tag
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class VmSetupError(RuntimeError):
    """The host cannot build or boot the VM; the message says what to do."""


@dataclass(frozen=True)
class VmImage:
    directory: Path

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def disk(self) -> Path:
        return self.directory / "root.img"


@dataclass(frozen=True)
class BootResult:
    """What came back from one boot."""

    output: str  # the script's standard output and error
    returncode: int | None  # None when the script never finished (it powered the VM off)
    console: str  # the serial console, colour codes removed
    seconds: float  # QEMU's wall time, boot to power-off
    timed_out: bool
    share: Path  # the 9p share: the script may leave files here


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


WHEEL_SOURCES = ("pyproject.toml", "README.md", "agent", "hw", "simulators")  # build-wheel.sh


def base_key() -> str:
    return digest([HERE / "build-base.sh"])


def image_key() -> str:
    return digest([HERE / "build-image.sh", HERE / "vmtest-runner.sh",
                   HERE / "vmtest-runner.service", CHECKOUT / "image", CHECKOUT / "systemd",
                   *(CHECKOUT / name for name in WHEEL_SOURCES)], salt=base_key())


@contextmanager
def _cache_lock() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run_logged(command: Sequence[str | Path], log: Path) -> None:
    with log.open("w") as out:
        done = subprocess.run([str(part) for part in command], stdout=out,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise VmSetupError(f"{Path(command[0]).name} failed (exit {done.returncode}); "
                           f"log in {log}:\n{tail}")


def _build_layer(kind: str, key: str, build: Callable[[Path], None],
                 say: Callable[[str], None]) -> Path:
    """The cached ``CACHE/kind-key`` directory, built (and older ones of its kind removed)."""
    final = CACHE / f"{kind}-{key}"
    if final.is_dir():
        return final
    if os.geteuid() != 0:
        raise VmSetupError(f"building the VM {kind} needs root (debootstrap, chroot, mount): "
                           f"run the VM tests as root once to fill {CACHE}")
    ensure_host_tools(BUILD_TOOLS)
    partial = CACHE / f"{kind}-{key}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    started = time.monotonic()
    say(f"vm: building the {kind} {key} (cache {CACHE})")
    build(partial)
    partial.rename(final)
    for stale in CACHE.glob(f"{kind}-*"):
        if stale != final:
            shutil.rmtree(stale, ignore_errors=True)
    say(f"vm: {kind} built in {time.monotonic() - started:.0f} s")
    return final


def build_wheel(out: Path) -> Path:
    """The dropkit wheel, by the Pi image's own step (image/build-wheel.sh)."""
    _run_logged(["env", f"PYTHON={sys.executable}", CHECKOUT / "image" / "build-wheel.sh", out],
                out / "wheel.log")
    (wheel,) = out.glob("dropkit-*.whl")
    return wheel


def build_or_reuse_image(say: Callable[[str], None] = print) -> VmImage:
    """The current VM image, from the cache or built (a few minutes; needs root)."""
    with _cache_lock():
        base = _build_layer("base", base_key(), lambda out: _run_logged(
            [HERE / "build-base.sh", out], out / "build.log"), say)

        def build_image(out: Path) -> None:
            wheel = build_wheel(out)
            _run_logged([HERE / "build-image.sh", base / "rootfs", wheel, out],
                        out / "build.log")
            wheel.unlink()

        return VmImage(_build_layer("image", image_key(), build_image, say))


def persistent_disk(image: VmImage, path: Path) -> Path:
    """A copy-on-write disk over the image that keeps what the VM writes, boot after boot."""
    ensure_host_tools(BOOT_TOOLS)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    str(image.disk), str(path)], check=True)
    return path


def boot(image: VmImage, script: str, *, files: Iterable[Path] = (), disk: Path | None = None,
         workdir: Path | None = None, timeout: float = 300) -> BootResult:
    """Boot the image, run ``script`` (bash, as root) once it is up, return when the VM is off.

    ``files`` are copied beside the script (the share is the script's working directory).
    Without ``disk`` the image boots as a snapshot and nothing it writes is kept.
    """
    ensure_host_tools(BOOT_TOOLS)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="dropkit-vm-"))
    share = workdir / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / "run.sh").write_text(script)
    for path in files:
        shutil.copy2(path, share / path.name)
    for stale in ("output.log", "rc"):
        (share / stale).unlink(missing_ok=True)
    console = workdir / "console.log"
    drive = (f"file={disk},format=qcow2,if=virtio" if disk
             else f"file={image.disk},format=raw,if=virtio,snapshot=on")
    command = [
        "qemu-system-x86_64", "-accel", os.environ.get("DROPKIT_VM_ACCEL", "tcg"),
        "-smp", "2", "-m", "1024", "-display", "none", "-monitor", "none", "-no-reboot",
        "-serial", f"file:{console}", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
        "-append", KERNEL_COMMAND_LINE, "-drive", drive,
        # A new machine each boot: only what the disk keeps may carry the kit's identity over.
        "-uuid", str(uuid.uuid4()),
        # The kernel's entropy from the host, as a Pi's hardware RNG gives it.
        "-device", "virtio-rng-pci",
        "-virtfs", f"local,path={share},mount_tag={SHARE_TAG},security_model=none",
        "-nic", "none",
    ]
    started = time.monotonic()
    timed_out = False
    try:
        subprocess.run(command, stdin=subprocess.DEVNULL, check=True, timeout=timeout,
                       capture_output=True)
    except subprocess.TimeoutExpired:
        timed_out = True
    except subprocess.CalledProcessError as exc:
        raise VmSetupError(f"qemu failed (exit {exc.returncode}): {exc.stderr.decode()}") from None
    seconds = time.monotonic() - started
    output = share / "output.log"
    status = share / "rc"
    return BootResult(
        output=output.read_text(errors="replace") if output.exists() else "",
        returncode=int(status.read_text()) if status.exists() else None,
        console=ANSI_ESCAPE.sub("", console.read_text(errors="replace")).replace("\r", ""),
        seconds=seconds, timed_out=timed_out, share=share)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.vmboot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", type=Path, help="bash script to run inside the VM as root")
    parser.add_argument("--file", type=Path, action="append", default=[],
                        help="a file to put beside the script (repeatable)")
    parser.add_argument("--disk", type=Path, help="a qcow2 disk to keep state in across boots "
                                                  "(made over the image if missing)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    try:
        image = build_or_reuse_image(lambda line: print(line, file=sys.stderr))
        if args.disk and not args.disk.exists():
            persistent_disk(image, args.disk.resolve())
        result = boot(image, args.script.read_text(), files=args.file,
                      disk=args.disk.resolve() if args.disk else None, timeout=args.timeout)
    except VmSetupError as exc:
        print(f"vmboot: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(result.output)
    print(f"vmboot: {result.seconds:.0f} s; console log and share in {result.share.parent}",
          file=sys.stderr)
    if result.timed_out:
        print("vmboot: timed out", file=sys.stderr)
        return 124
    return 1 if result.returncode is None else result.returncode


if __name__ == "__main__":
    sys.exit(main())
