"""gpiozero's lgpio pins on a chosen gpiochip, on a Raspberry Pi or any other Linux board.

gpiozero's :class:`~gpiozero.pins.lgpio.LGPIOFactory` talks to a Linux gpiochip but names its
pins from the Pi's board description, so it refuses a board that is not a Pi. Here a board that
is not a Pi (the test VM's gpio-sim chip, another single-board computer) gets a description of
the chip itself: line N is pin N, ``GPION``. On a Pi the Pi's own description is kept, with its
header names (``BOARD11``) and its fixed pull-ups.

Needs the ``lgpio`` module (Raspberry Pi OS's python3-lgpio, or PyPI's lgpio), imported on use:
a laptop running ``dropkit sim`` or the tests has none. Example::

    from gpiozero import Button
    from hw.gpiochip import chip_pin_factory

    button = Button(3, pin_factory=chip_pin_factory(1))  # line 3 of /dev/gpiochip1
"""

from __future__ import annotations

from gpiozero.exc import PinUnknownPi
from gpiozero.pins import BoardInfo, Factory, HeaderInfo, PinInfo


def chip_pin_factory(chip: int) -> Factory:
    """gpiozero's lgpio pin factory on ``/dev/gpiochip<chip>``; off a Pi, pin N is line N."""
    import lgpio
    from gpiozero.pins.lgpio import LGPIOFactory

    class ChipFactory(LGPIOFactory):
        def _get_board_info(self) -> BoardInfo:
            try:
                return super()._get_board_info()
            except PinUnknownPi:
                self._info = chip_board(chip, *lgpio.gpio_get_chip_info(self._handle)[1:])
                return self._info

    return ChipFactory(chip=chip)


def chip_board(chip: int, lines: int, name: str, label: str) -> BoardInfo:
    """A board whose one header is the chip's lines: line N is pin N, named ``GPION``.

    >>> board = chip_board(1, 8, "gpiochip1", "gpio-sim.0-node0")
    >>> [pin.name for header, pin in board.find_pin(3)]
    ['GPIO3']
    """
    pins = {line + 1: PinInfo(number=line + 1, name=f"GPIO{line}",
                              names=frozenset({line, str(line), f"GPIO{line}"}), pull="",
                              row=line + 1, col=1, interfaces=frozenset({"gpio"}))
            for line in range(lines)}
    return BoardInfo(revision=f"gpiochip{chip}", model=label, pcb_revision="", released="",
                     soc="", manufacturer="", memory=0, storage="", usb=0, usb3=0, ethernet=0,
                     eth_speed=0, wifi=False, bluetooth=False, csi=0, dsi=0,
                     headers={name: HeaderInfo(name=name, rows=lines, columns=1, pins=pins)},
                     board="")
