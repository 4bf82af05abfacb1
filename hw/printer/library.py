"""python-escpos, imported on first use with its import side effects kept in check.

Its capabilities pickle goes to a fixed cache directory, no temporary directory is left behind
and the root logger is left unconfigured (see :mod:`hw.printer`). A pickle that cannot be read
is removed and made again: python-escpos opens it for writing before it has the data, so a power
cut soon after the first start leaves it empty, and the library would fail on it at every start.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import platform
import sys
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


def capabilities_pickle() -> Path:
    """The file python-escpos keeps its parsed printer database in (named as the library does)."""
    return (Path(os.environ[_ESCPOS_PICKLE_DIR_ENV])
            / f"{platform.python_version()}.capabilities.pickle")


@functools.cache
def _import_escpos() -> ModuleType:
    Path(os.environ[_ESCPOS_PICKLE_DIR_ENV]).mkdir(parents=True, exist_ok=True)
    spoilt = ""
    with (_ESCPOS_IMPORT_LOCK, _root_logger_left_unconfigured(),
          _empty_temporary_directories_removed()):
        try:
            _import_escpos_modules()
        except Exception as exc:  # an unreadable pickle fails the import with any error
            pickle = capabilities_pickle()
            if not pickle.exists():
                raise
            spoilt = f"{pickle} ({type(exc).__name__}: {exc})"
            pickle.unlink()
            for name in [name for name in sys.modules if name.partition(".")[0] == "escpos"]:
                del sys.modules[name]
            _import_escpos_modules()
    if spoilt:
        logging.getLogger(__name__).warning(
            "python-escpos could not read its capabilities pickle %s, as a power cut while it "
            "was written leaves it: made again", spoilt)
    import escpos.printer
    # The transports call logging.info() and logging.error(), which configure the root logger
    # when it has no handler yet; a named logger takes the same calls without that side effect.
    transport_log = logging.getLogger("escpos.printer")
    for transport in (escpos.printer.network, escpos.printer.serial, escpos.printer.usb):
        transport.logging = transport_log
    return escpos


def _import_escpos_modules() -> None:
    import escpos.constants
    import escpos.exceptions
    import escpos.magicencode
    import escpos.printer  # noqa: F401


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
