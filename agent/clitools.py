"""What every ``dropkit`` command says when it cannot run: a failure, an extra not installed."""

from __future__ import annotations

import re
import sys


def fail(message: str) -> int:
    print(f"dropkit: {message}", file=sys.stderr)
    return 2


def missing_extra(command: str, extra: str) -> str:
    """Empty when the packages of dropkit's ``extra`` are installed, else the one line that
    says what to install. The extra's list is the installed dropkit's own metadata (its
    pyproject.toml); dropkit run from a source tree without it is not checked."""
    from importlib import metadata

    try:
        requires = metadata.requires("dropkit") or []
    except metadata.PackageNotFoundError:
        return ""
    missing = []
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        if re.search(rf"""extra\s*==\s*["']{re.escape(extra)}["']""", marker):
            name = re.split(r"[\s\[<>=!~;(]", spec.strip(), maxsplit=1)[0]
            try:
                metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
    if not missing:
        return ""
    return (f"dropkit {command} needs the {extra} extra (missing {', '.join(missing)}): "
            f"pip install 'dropkit[{extra}]'")
