"""A fake I2C bus with smbus2.SMBus's call surface, byte-accurate down to the wire.

Every SMBus call is turned into the I2C transaction the kernel would put on the wire (a write
of the register address, then a repeated-start read, ...) and handed to the device model at
that address as raw bytes. So the byte order is the real one: ``read_word_data`` returns the
first byte from the chip in the low byte, exactly as the SMBus word protocol does, and a
driver that forgets to swap an MSB-first chip's bytes reads wrong values here too.

- :class:`FakeSMBus`: the bus; devices attach at 7-bit addresses; an empty address fails with
  ``OSError(121)`` (EREMOTEIO, no acknowledge) as on a Raspberry Pi; errors can be injected
  by count or at random from a seeded RNG.
- :class:`I2CDevice`: what a device model implements (raw write and read transactions).
- :class:`WordRegisterDevice`: a chip with an 8-bit register pointer and 16-bit registers
  sent most significant byte first; the power chip models build on it.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from ctypes import memmove
from typing import ClassVar, Protocol

from smbus2 import i2c_msg
from smbus2.smbus2 import I2C_M_RD, I2C_SMBUS_BLOCK_MAX

__all__ = ["FakeSMBus", "I2CDevice", "WordRegisterDevice"]


class I2CDevice(Protocol):
    """A device model on the fake bus, seen at the level of I2C transfers."""

    def i2c_write(self, data: bytes) -> None:
        """A write transfer: the bytes after the address byte (may be empty: a quick write)."""

    def i2c_read(self, length: int) -> bytes:
        """A read transfer of ``length`` bytes."""


def _os_error(code: int, detail: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({detail})")


def _check_byte(value: int) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"byte value {value!r} out of range 0..255")
    return value


class FakeSMBus:
    """smbus2.SMBus's call surface over device models instead of ``/dev/i2c-N``.

    Stricter than the kernel in one way: values that do not fit a byte or word raise
    ValueError instead of being truncated. Calls on a closed bus raise ``OSError(EBADF)``.
    Each call holds a lock, as the kernel's adapter lock serialises transfers.

    >>> bus = FakeSMBus(1)
    >>> bus.attach(0x40, WordRegisterDevice({0x02: 0x5DA0}))
    >>> hex(bus.read_word_data(0x40, 0x02))   # the chip sent 0x5D then 0xA0
    '0xa05d'
    >>> bus.read_i2c_block_data(0x40, 0x02, 2)
    [93, 160]
    """

    def __init__(self, bus: int | str | None = None, force: bool = False, *,
                 seed: int = 0) -> None:
        self.bus: int | str | None = None
        self.force = force
        self._pec = 0
        self._devices: dict[int, I2CDevice] = {}
        self._queued_errors: dict[int, list[int]] = {}
        self._error_probability = 0.0
        self._error_code = errno.EREMOTEIO
        self._error_addresses: frozenset[int] | None = None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        if bus is not None:
            self.open(bus)

    # -- smbus2.SMBus surface -------------------------------------------------------------

    def __enter__(self) -> FakeSMBus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self, bus: int | str) -> None:
        """Open the bus (any number or path: nothing is touched on the host)."""
        if not isinstance(bus, int | str):
            raise TypeError(f"Unexpected type(bus)={type(bus)}")
        self.bus = bus

    def close(self) -> None:
        """Close the bus; PEC returns to off, as in smbus2."""
        self.bus = None
        self._pec = 0

    @property
    def pec(self) -> int:
        """SMBus packet error checking: 0 off, 1 on (accepted, not put on the fake wire)."""
        return self._pec

    @pec.setter
    def pec(self, enable: bool | int) -> None:
        self._pec = int(bool(enable))

    def enable_pec(self, enable: bool = True) -> None:
        self.pec = enable

    def write_quick(self, i2c_addr: int, force: bool | None = None) -> None:
        self._transfer(i2c_addr, b"")

    def read_byte(self, i2c_addr: int, force: bool | None = None) -> int:
        return self._transfer(i2c_addr, None, 1)[0]

    def write_byte(self, i2c_addr: int, value: int, force: bool | None = None) -> None:
        self._transfer(i2c_addr, bytes([_check_byte(value)]))

    def read_byte_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._transfer(i2c_addr, bytes([_check_byte(register)]), 1)[0]

    def write_byte_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._transfer(i2c_addr, bytes([_check_byte(register), _check_byte(value)]))

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        """SMBus read word: the first byte received is the low byte of the result."""
        first, second = self._transfer(i2c_addr, bytes([_check_byte(register)]), 2)
        return first | (second << 8)

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        """SMBus write word: the low byte of ``value`` goes on the wire first."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"word value {value!r} out of range 0..0xFFFF")
        self._transfer(i2c_addr, bytes([_check_byte(register), value & 0xFF, value >> 8]))

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int,
                            force: bool | None = None) -> list[int]:
        if length > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Desired block length over {I2C_SMBUS_BLOCK_MAX}")
        return list(self._transfer(i2c_addr, bytes([_check_byte(register)]), length))

    def write_i2c_block_data(self, i2c_addr: int, register: int, data: Sequence[int],
                             force: bool | None = None) -> None:
        if len(data) > I2C_SMBUS_BLOCK_MAX:
            raise ValueError(f"Data length cannot exceed {I2C_SMBUS_BLOCK_MAX} bytes")
        self._transfer(i2c_addr, bytes([_check_byte(register), *map(_check_byte, data)]))

    def i2c_rdwr(self, *i2c_msgs: i2c_msg) -> None:
        """Combined transfer: each message in turn; read messages get their buffers filled."""
        with self._lock:
            for address in dict.fromkeys(msg.addr for msg in i2c_msgs):
                self._check_reachable(address)
            for msg in i2c_msgs:
                device = self._devices[msg.addr]
                if msg.flags & I2C_M_RD:
                    data = self._read_exact(device, msg.len)
                    memmove(msg.buf, data, msg.len)
                else:
                    device.i2c_write(bytes(msg))

    # -- the bench: devices and faults ----------------------------------------------------

    def attach(self, address: int, device: I2CDevice) -> None:
        """Put a device at a 7-bit address (plugging it in)."""
        self._check_address(address)
        with self._lock:
            if address in self._devices:
                raise ValueError(f"address 0x{address:02x} is already taken")
            self._devices[address] = device

    def detach(self, address: int) -> I2CDevice:
        """Take the device at an address off the bus (unplugging it) and return it."""
        with self._lock:
            return self._devices.pop(address)

    def device_at(self, address: int) -> I2CDevice | None:
        """The device at an address, if any."""
        return self._devices.get(address)

    def addresses(self) -> list[int]:
        """Occupied addresses, in order (what ``i2cdetect`` would show)."""
        return sorted(self._devices)

    def inject_errors(self, address: int, count: int = 1,
                      code: int = errno.EREMOTEIO) -> None:
        """Make the next ``count`` calls touching ``address`` fail with ``OSError(code)``."""
        self._check_address(address)
        with self._lock:
            self._queued_errors.setdefault(address, []).extend([code] * count)

    def set_error_rate(self, probability: float, code: int = errno.EREMOTEIO,
                       addresses: Iterable[int] | None = None) -> None:
        """Fail each call with ``OSError(code)`` at this probability, drawn from the seeded RNG.

        ``addresses`` limits the faults to those devices; None means every address.
        """
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within 0..1")
        with self._lock:
            self._error_probability = probability
            self._error_code = code
            self._error_addresses = None if addresses is None else frozenset(addresses)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _check_address(address: int) -> None:
        if not 0 <= address <= 0x7F:
            raise _os_error(errno.EINVAL, f"0x{address:x} is not a 7-bit I2C address")

    def _check_reachable(self, address: int) -> None:
        """Raise what the kernel would for a call to ``address`` now; lock held."""
        if self.bus is None:
            raise _os_error(errno.EBADF, "bus is closed")
        self._check_address(address)
        queued = self._queued_errors.get(address)
        if queued:
            raise _os_error(queued.pop(0), f"injected fault at 0x{address:02x}")
        if (self._error_probability
                and (self._error_addresses is None or address in self._error_addresses)
                and self._rng.random() < self._error_probability):
            raise _os_error(self._error_code, f"random fault at 0x{address:02x}")
        if address not in self._devices:
            raise _os_error(errno.EREMOTEIO, f"no acknowledge from 0x{address:02x}")

    def _transfer(self, address: int, write: bytes | None, read_length: int = 0) -> bytes:
        """One transaction: an optional write, then (after a repeated start) a read."""
        with self._lock:
            self._check_reachable(address)
            device = self._devices[address]
            if write is not None:
                device.i2c_write(write)
            return self._read_exact(device, read_length) if read_length else b""

    @staticmethod
    def _read_exact(device: I2CDevice, length: int) -> bytes:
        data = device.i2c_read(length)
        if len(data) != length:
            raise RuntimeError(f"{device!r} answered {len(data)} bytes to a {length}-byte read")
        return data


class WordRegisterDevice:
    """A chip with an 8-bit register pointer and 16-bit registers sent MSB first.

    A write transfer's first byte sets the pointer; the next two bytes, if both are there, are
    written to that register (MSB first). A read transfer streams the pointed register MSB
    first; reads longer than two bytes continue at ``pointer + register_step`` (0 repeats the
    register). Subclasses model a chip by overriding :meth:`read_register` and
    :meth:`write_register`; used as is, it is a plain register file for tests.
    """

    register_step: ClassVar[int] = 0

    def __init__(self, registers: Mapping[int, int] | None = None) -> None:
        self.registers: dict[int, int] = dict(registers or {})
        self.pointer = 0

    def read_register(self, register: int) -> int:
        """The 16-bit value the chip sends for a register (0 for an unknown one)."""
        return self.registers.get(register, 0)

    def write_register(self, register: int, value: int) -> None:
        """A complete 16-bit write to a register."""
        self.registers[register] = value

    def i2c_write(self, data: bytes) -> None:
        if not data:
            return
        self.pointer = data[0]
        if len(data) >= 3:
            self.write_register(self.pointer, (data[1] << 8) | data[2])

    def i2c_read(self, length: int) -> bytes:
        out = bytearray()
        register = self.pointer
        while len(out) < length:
            out += self.read_register(register).to_bytes(2, "big")
            register = (register + self.register_step) & 0xFF
        return bytes(out[:length])
