"""Boot a VM test image under QEMU with systemd as init, run a host script in it, or pull
its plug.

The image (``images.py``) boots from its kernel and initramfs with the root on a virtio disk;
files cross through a 9p share (the VM has no network), the serial console is a log, and an
optional line channel (``lines.py``) brings what the guest writes to the host as it writes it.

In a test::

    image = build_or_reuse_image()          # or build_or_reuse_image(arch="arm64")
    result = boot(image, "modprobe i2c-stub chip_addr=0x40 && ls /dev/i2c-*")
    result.output, result.returncode, result.console

From a shell, as root (the script's output is printed and its exit status returned)::

    .venv/bin/python -m tests.vm.vmboot [--arch arm64] [--file PATH]... [--disk DISK.qcow2] SCRIPT
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm.images import (
    ARCHES,
    VmImage,
    VmSetupError,
    boot_tools,
    build_or_reuse_image,
    ensure_host_tools,
    persistent_disk,
)
from tests.vm.lines import Line, LineChannel

# The persistent disk (a qcow2 overlay) and its cache mode, chosen so that killing QEMU is a
# faithful power cut (docs/deploy.md, "The pulled plug"). What the guest's own page cache held
# dies with QEMU in any mode. cache=none: the guest sees a volatile write cache, so ext4 and
# SQLite must flush, as on an SD card, and each flush is honoured down to the host's disk; QEMU
# writes with O_DIRECT and keeps qcow2's cluster tables in its own memory until the guest's
# next flush, so writes into new clusters since the last flush die with QEMU as a volatile
# cache's would (writes over allocated clusters do reach the host: more lenient than a card).
# Not cache=unsafe (flushes dropped: a kill loses data the guest had flushed), and not
# writethrough/directsync (no volatile cache: the guest's flushes would go untested).
DISK_CACHE = "cache=none,aio=native"
SHARE_TAG = "vmshare"  # vmtest-runner.sh mounts this tag
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class BootResult:
    """What came back from one boot."""

    output: str  # the script's standard output and error
    returncode: int | None  # None when the script never finished (it powered the VM off)
    console: str  # the serial console, colour codes removed
    seconds: float  # QEMU's wall time, boot to power-off
    timed_out: bool
    share: Path  # the 9p share: the script may leave files here
    lines: tuple[Line, ...] = ()  # what the guest wrote to the line channel (lines.py)
    pulled: bool = False  # QEMU was killed: the machine lost power


@dataclass
class RunningVm:
    """A VM :func:`launch` started: wait for it to power off, or pull its plug."""

    process: subprocess.Popen[bytes]
    workdir: Path
    share: Path
    started: float
    lines: LineChannel | None = None
    pulled_at: float | None = field(default=None, init=False)
    cpu_s: float | None = field(default=None, init=False)  # QEMU's CPU time when pulled

    def cpu_seconds(self) -> float:
        """QEMU's CPU time so far (user and system), while it runs."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def pull_plug(self) -> float:
        """Kill QEMU (SIGKILL): the machine loses power. Seconds since launch."""
        self.cpu_s = self.cpu_seconds()
        self.process.kill()
        self.pulled_at = time.monotonic() - self.started
        self.process.wait()
        return self.pulled_at

    def wait(self, timeout: float) -> BootResult:
        """Until QEMU exits (killed when ``timeout`` runs out), then what the boot left."""
        timed_out = False
        try:
            self.process.wait(timeout=max(0.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.process.kill()
            self.process.wait()
        seconds = time.monotonic() - self.started
        qemu_log = (self.workdir / "qemu.log").read_text(errors="replace")
        if self.process.returncode not in (0, -9) or (
                self.process.returncode == -9 and not timed_out and self.pulled_at is None):
            raise VmSetupError(f"qemu failed (exit {self.process.returncode}): {qemu_log}")
        lines = tuple(self.lines.drain()) if self.lines else ()
        output = self.share / "output.log"
        status = self.share / "rc"
        console = (self.workdir / "console.log").read_text(errors="replace")
        return BootResult(
            output=output.read_text(errors="replace") if output.exists() else "",
            returncode=int(status.read_text()) if status.exists() else None,
            console=ANSI_ESCAPE.sub("", console).replace("\r", ""),
            seconds=seconds, timed_out=timed_out, share=self.share, lines=lines,
            pulled=self.pulled_at is not None)


def launch(image: VmImage, script: str, *, files: Iterable[Path] = (), disk: Path | None = None,
           workdir: Path | None = None, line_channel: bool = False,
           kernel_options: Sequence[str] = (), cpus: int = 1, memory_mb: int = 1024,
           bare: bool = False) -> RunningVm:
    """Start the image and have it run ``script`` (bash, as root) once it is up.

    ``files`` are copied beside the script (the share is the script's working directory).
    Without ``disk`` the image boots as a snapshot and nothing it writes is kept. With
    ``line_channel`` the guest may write lines to ``lines.GUEST_PORT`` for the host to read as
    they come (``RunningVm.lines``). ``kernel_options`` go on the kernel's command line after
    the image's own (``systemd.unit=...``, say). ``cpus`` and ``memory_mb`` size the guest
    (one core by default: under emulation each virtual core is a host thread, which on a
    2-core host beside other work gains little, and twice an amd64 guest of two cores died
    early in its boot of the kernel's own code patching across them, ``Oops: int3``);
    ``bare`` leaves out QEMU's default devices (VGA, floppy, CD-ROM, parallel port), which the
    guest's kernel and udev would otherwise probe and drive at every boot.
    """
    ensure_host_tools(boot_tools(image.arch))
    workdir = workdir or Path(tempfile.mkdtemp(prefix="dropkit-vm-"))
    share = workdir / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / "run.sh").write_text(script)
    for path in files:
        shutil.copy2(path, share / path.name)
    for stale in ("output.log", "rc"):
        (share / stale).unlink(missing_ok=True)
    drive = (f"file={disk},format=qcow2,{DISK_CACHE}" if disk
             else f"file={image.disk},format=raw,snapshot=on")
    accel = "tcg" if image.arch.foreign else os.environ.get("DROPKIT_VM_ACCEL", "tcg")
    command = [
        image.arch.qemu, *image.arch.qemu_options, "-accel", accel,
        *(("-nodefaults", "-vga", "none") if bare else ()),
        "-smp", str(cpus), "-m", str(memory_mb), "-display", "none", "-monitor", "none",
        "-no-reboot",
        "-serial", f"file:{workdir / 'console.log'}", "-kernel", str(image.kernel),
        "-initrd", str(image.initrd),
        "-append", " ".join([image.arch.kernel_command_line, *kernel_options]),
        "-drive", f"{drive},if=none,id=root", "-device", "virtio-blk-pci,drive=root",
        # A new machine each boot: only what the disk keeps may carry the kit's identity over.
        "-uuid", str(uuid.uuid4()),
        # The kernel's entropy from the host, as a Pi's hardware RNG gives it.
        "-device", "virtio-rng-pci",
        "-fsdev", f"local,id=share,path={share},security_model=none",
        "-device", f"virtio-9p-pci,fsdev=share,mount_tag={SHARE_TAG}",
        "-nic", "none",
    ]
    lines = LineChannel(workdir / "lines.sock", workdir / "lines.log") if line_channel else None
    if lines:
        command += lines.qemu_arguments()
    with (workdir / "qemu.log").open("wb") as qemu_log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=qemu_log,
                                   stderr=subprocess.STDOUT)
    running = RunningVm(process, workdir, share, time.monotonic(), lines)
    if lines:
        try:
            lines.accept(running.started)
        except TimeoutError:
            process.kill()
            process.wait()
            raise VmSetupError(f"qemu never connected its line channel: "
                               f"{(workdir / 'qemu.log').read_text(errors='replace')}") from None
    return running


def boot(image: VmImage, script: str, *, files: Iterable[Path] = (), disk: Path | None = None,
         workdir: Path | None = None, timeout: float = 300) -> BootResult:
    """Boot the image, run ``script`` (bash, as root) once it is up, return when the VM is off
    (see :func:`launch`)."""
    return launch(image, script, files=files, disk=disk, workdir=workdir).wait(timeout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.vm.vmboot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("script", type=Path, help="bash script to run inside the VM as root")
    parser.add_argument("--arch", choices=sorted(ARCHES), default="amd64")
    parser.add_argument("--file", type=Path, action="append", default=[],
                        help="a file to put beside the script (repeatable)")
    parser.add_argument("--disk", type=Path, help="a qcow2 disk to keep state in across boots "
                                                  "(made over the image if missing)")
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)
    try:
        image = build_or_reuse_image(lambda line: print(line, file=sys.stderr), arch=args.arch)
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
