"""What the rules refuse, in words and a code; the web layer picks the HTTP status for a code.

    >>> refusal = Refusal("sold_out", "tee-black-m: 0 left, 1 asked", sku="tee-black-m")
    >>> refusal.body()
    {'error': 'sold_out', 'detail': 'tee-black-m: 0 left, 1 asked', 'sku': 'tee-black-m'}
"""

from __future__ import annotations

from typing import Any


class Refusal(Exception):
    """An operation the kit refuses: ``code`` names why, ``detail`` says it in plain words,
    ``extra`` carries the fields a client acts on (``sku``, ``available``, ``retry_after``)."""

    def __init__(self, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.code, self.detail, self.extra = code, detail, extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def invalid(detail: str) -> Refusal:
    """A request that breaks the rules of its own shape (a field's type, range or length)."""
    return Refusal("invalid", detail)
