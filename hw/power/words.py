"""The word-register access the power chips share: smbus2's word calls, byte order, errors.

A chip driver is a :class:`WordRegisterChip`: 16-bit registers behind an 8-bit register
address, put on the wire most significant byte first. A failed bus transaction becomes a
:class:`SensorError` that keeps the bus's errno.
"""

from __future__ import annotations

import errno as errno_codes
from typing import ClassVar, Protocol


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` the drivers call."""

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None: ...


class SensorError(OSError):
    """A bus transaction with a power chip failed.

    ``errno`` is the bus's own: 121 (EREMOTEIO) when the chip did not acknowledge (absent,
    unpowered, unplugged), others (EIO, ETIMEDOUT) for a disturbed bus.
    """

    def __init__(self, code: int, message: str, *, chip: str, address: int,
                 register: int) -> None:
        super().__init__(code, message)
        self.chip = chip
        self.address = address
        self.register = register


class WrongChip(SensorError):
    """The chip at a configured address answered, but is not the part the config names (errno
    ENODEV): its readings would be misread, so none are taken."""


def swap_word_bytes(word: int) -> int:
    """Swap the two bytes of a 16-bit word; it is its own inverse.

    These chips put a register on the wire most significant byte first (INA219 §8.5.6,
    INA226 §6.5.5.3, MAX17048 "Write Data Protocol" and "Read Data Protocol"), while the
    SMBus word protocol behind smbus2's ``read_word_data``/``write_word_data`` carries the low
    byte first.
    """
    return ((word & 0x00FF) << 8) | ((word >> 8) & 0x00FF)



def signed16(value: int) -> int:
    """A 16-bit register read as two's complement."""
    return value - 0x10000 if value & 0x8000 else value


class WordRegisterChip:
    """A chip whose registers are 16-bit words behind an 8-bit register address."""

    CHIP: ClassVar[str]

    def __init__(self, bus: SMBusLike, address: int) -> None:
        self.bus = bus
        self.address = address

    def identity(self) -> str:
        """"" when the chip at the address is this part, else what answered there, in words.
        Each chip says how it tells (id registers, power-on values)."""
        raise NotImplementedError

    def identify(self) -> bool:
        """Whether the chip at the address is this part."""
        return self.identity() == ""

    def check_identity(self) -> None:
        """Raise :class:`WrongChip`, naming the address and what answered, unless the chip
        there is this part; a bus failure raises :class:`SensorError` as any read does."""
        answered = self.identity()
        if answered:
            raise WrongChip(
                errno_codes.ENODEV, f"{self.CHIP} expected at 0x{self.address:02x}, but another "
                f"chip answered there: {answered}", chip=self.CHIP, address=self.address,
                register=-1)

    def read_register(self, register: int) -> int:
        """The register's 16-bit value as the chip holds it (byte order already fixed)."""
        try:
            word = self.bus.read_word_data(self.address, register)
        except OSError as exc:
            raise self._bus_error(exc, "read", register) from exc
        return swap_word_bytes(word)

    def write_register(self, register: int, value: int) -> None:
        """Write a 16-bit value to a register, most significant byte first on the wire."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{self.CHIP} register value 0x{value:X} does not fit 16 bits")
        try:
            self.bus.write_word_data(self.address, register, swap_word_bytes(value))
        except OSError as exc:
            raise self._bus_error(exc, "write", register) from exc

    def _bus_error(self, exc: OSError, verb: str, register: int) -> SensorError:
        code = exc.errno if exc.errno is not None else errno_codes.EIO
        reason = exc.strerror or str(exc)
        return SensorError(
            code, f"{self.CHIP} at 0x{self.address:02x}: {verb} of register 0x{register:02x} "
            f"failed: {reason}", chip=self.CHIP, address=self.address, register=register)
