"""python-escpos, imported on first use with its import side effects kept in check.

Its capabilities pickle goes to a fixed cache directory, no temporary directory is left behind
and the root logger is left unconfigured (see :mod:`hw.printer`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

DEFAULT_ESCPOS_CACHE_DIR = Path("~/.cache/dropkit/escpos")
"""Where python-escpos keeps its capabilities pickle unless told otherwise."""
_ESCPOS_PICKLE_DIR_ENV = "ESCPOS_CAPABILITIES_PICKLE_DIR"
_ESCPOS_IMPORT_LOCK = threading.Lock()


def load_escpos(cache_dir: Path | None = None) -> ModuleType:
    """python-escpos, imported on first use without temporary directories or root logging."""
    os.environ.setdefault(_ESCPOS_PICKLE_DIR_ENV,
                          str(cache_dir or DEFAULT_ESCPOS_CACHE_DIR.expanduser()))
    return _import_escpos()


@functools.cache
def _import_escpos() -> ModuleType:
    Path(os.environ[_ESCPOS_PICKLE_DIR_ENV]).mkdir(parents=True, exist_ok=True)
    with (_ESCPOS_IMPORT_LOCK, _root_logger_left_unconfigured(),
          _empty_temporary_directories_removed()):
        import escpos.constants
        import escpos.exceptions
        import escpos.magicencode
        import escpos.printer
    # The transports call logging.info() and logging.error(), which configure the root logger
    # when it has no handler yet; a named logger takes the same calls without that side effect.
    transport_log = logging.getLogger("escpos.printer")
    for transport in (escpos.printer.network, escpos.printer.serial, escpos.printer.usb):
        transport.logging = transport_log
    return escpos


@contextlib.contextmanager
def _root_logger_left_unconfigured() -> Iterator[None]:
    """Make ``logging.basicConfig()`` a no-op for a moment (it skips a root with a handler)."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)


@contextlib.contextmanager
def _empty_temporary_directories_removed() -> Iterator[None]:
    """Remove the empty directories that ``tempfile.mkdtemp()`` makes on this thread meanwhile.

    python-escpos 3.1 runs ``environ.get(PICKLE_DIR_VARIABLE, mkdtemp())`` on import, which
    makes a directory even when the variable is set, and never uses it.
    """
    real_mkdtemp = tempfile.mkdtemp
    this_thread = threading.get_ident()
    made: list[str] = []

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        if threading.get_ident() == this_thread:
            made.append(path)
        return path

    tempfile.mkdtemp = recording_mkdtemp
    try:
        yield
    finally:
        tempfile.mkdtemp = real_mkdtemp
        for path in made:
            with contextlib.suppress(OSError):  # not empty: not ours to remove
                os.rmdir(path)
