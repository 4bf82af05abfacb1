"""Power sensing over smbus2: TI INA219 / INA226 current monitors and the MAX17048 fuel gauge.

Each driver turns one chip's registers into a frozen reading in SI units and decides nothing:
it does not retry, smooth or judge. A failed bus transaction raises
:class:`~hw.power.words.SensorError` (an ``OSError`` that keeps the bus's errno: 121,
EREMOTEIO, when nothing acknowledged the address). Which source feeds the kit, and what to do
about a flaky sensor, is the agent's call.

- :mod:`hw.power.ina219` and :mod:`hw.power.ina226`: a :class:`~hw.power.current.PowerReading`
  per power input (what the two share is in :mod:`hw.power.current`).
- :mod:`hw.power.max17048`: a :class:`~hw.power.max17048.GaugeReading` (and
  :class:`~hw.power.max17048.GaugeSettings`) for the cell.
- :mod:`hw.power.words`: the word-register access, :class:`~hw.power.words.SMBusLike` and
  :class:`~hw.power.words.SensorError`.

The drivers take any object with smbus2.SMBus's word calls (:class:`~hw.power.words.SMBusLike`):
``smbus2.SMBus(1)`` on a Pi, ``simulators.smbus.FakeSMBus`` in tests and ``dropkit sim``.

Datasheets cited: INA219 SBOS448G (Dec 2015), INA226 SBOS547B (Sep 2024), and the
MAX17048/MAX17049 data sheet, whose register sections are named rather than numbered.
"""
