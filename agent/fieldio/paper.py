"""What each print job puts on paper: the words of a receipt, a copy, a NOT PAID slip, a void
or a refund slip, for the order as it stands when it prints (docs/field-io.md, "What the
paper says").

A slip never looks like a sale: it says what it is in a white-on-black banner, and a receipt
or copy of an order that is not paid, voided or refunded says so in large type under its
total. The QR code holds the link of the chain entry the paper stands for: the sale's for a
receipt, a copy or a NOT PAID slip, the void's or the refund's for their slips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.config import ReceiptConfig
from agent.core.wording import UNSET_CLOCK, Wording, state_word
from hw.printer.receipt import Receipt, ReceiptLine

LinkMaker = Callable[[int, str], str | None]
"""A chain entry's ``(seq, hash)`` to the URL its QR code holds; None while it is not known."""

_CAPTION = "Scan to check it"
_NOT_A_RECEIPT = {
    "NOT PAID": "Not paid: this is not a receipt. The receipt prints once the payment is "
                "confirmed.",
    "VOIDED": "Voided: no payment was taken. This is not a receipt.",
}


@dataclass(frozen=True)
class PaperWords:
    """What every paper of the kit shares: the shop, the kit, ``[receipt]`` and the links."""

    shop_name: str
    kit_id: str
    config: ReceiptConfig
    link: LinkMaker

    def paper(self, kind: str, order: dict[str, Any], now: str) -> Receipt | None:
        """The paper of a job of ``kind`` for ``order`` (its view with ``closed``, see
        :func:`agent.core.printjobs.next_job`); None while its link is not known."""
        words = Wording(self.config)
        closed = order["closed"]
        if kind in ("void", "refund"):  # queued with the order's void or refund
            return self._slip(order, closed, words)
        link = self.link(order["receipt"]["seq"], order["receipt"]["hash"])
        if link is None:
            return None
        state = state_word(order)
        rows = [("Payment", order["payment"]["method"])]
        if closed is not None:
            rows.append(("Refunded" if closed["kind"] == "refund" else "Voided",
                         words.time(closed["created_at"])))
        notes = [_NOT_A_RECEIPT[state]] if state in _NOT_A_RECEIPT else []
        banner = ""
        if kind == "reprint":
            banner = "COPY"
            rows.append(("Copy made", words.time(now)))
        elif kind == "unpaid":
            banner, state = "NOT PAID", ""
            rows[0] = ("Payment", f"{order['payment']['method']}, not confirmed")
        return Receipt(
            shop_name=self.shop_name, time=words.time(order["created_at"]),
            time_note="" if order["clock_synced"] else UNSET_CLOCK,
            reference=self._reference(order), link=link, banner=banner,
            lines=tuple(ReceiptLine(line["qty"], line["name"], words.money(line["amount_cents"]))
                        for line in order["lines"]),
            total=words.money(order["total_cents"]), rows=tuple(rows), state=state,
            notes=tuple(notes), link_caption=_CAPTION, footer=self.config.footer_lines)

    def _slip(self, order: dict[str, Any], closed: dict[str, Any],
              words: Wording) -> Receipt | None:
        link = self.link(closed["seq"], closed["hash"])
        if link is None:
            return None
        amount = words.money(order["total_cents"])
        sold = ("Sale of", words.time(order["created_at"]))
        if closed["kind"] == "void":
            banner, rows = "VOID", (("Not charged", amount), sold)
            notes = ["No payment was taken: this sale is cancelled and is not a receipt."]
        else:
            banner = "REFUND"
            rows = (("Refunded", amount), ("Paid by", order["payment"]["method"]), sold,
                    ("Goods back in stock", "yes" if closed["restock"] else "no"))
            notes = []
        if closed["reason"]:
            notes.append(f"Reason: {closed['reason']}")
        return Receipt(shop_name=self.shop_name, time=words.time(closed["created_at"]),
                       reference=self._reference(order), link=link, banner=banner,
                       rows=rows, notes=tuple(notes), link_caption=_CAPTION,
                       footer=self.config.footer_lines)

    def _reference(self, order: dict[str, Any]) -> tuple[str, str]:
        return f"Order #{order['number']}", f"Kit {self.kit_id}"
