"""A QR code as a small SVG, for the pickup code a customer's phone shows the kit's scanner.

``qrcode`` (already on the kit: python-escpos prints receipts' QR codes with it) makes the
matrix; the SVG is drawn here, one path of whole rows of modules with crisp edges on a white
quiet zone, so a phone in dark mode still shows the scanner black on white. Imported only when
a page asks for one.

    >>> svg = qr_svg("PICKUP-K7M3XA")
    >>> svg.startswith("<svg") and 'viewBox="0 0 29 29"' in svg
    True
"""

from __future__ import annotations

QUIET_ZONE = 4
"""Modules of white around the code, as the QR standard asks."""


def qr_svg(text: str) -> str:
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=QUIET_ZONE)
    code.add_data(text)
    code.make(fit=True)
    matrix = code.get_matrix()
    size = len(matrix)
    runs = []
    for y, row in enumerate(matrix):
        x = 0
        while x < size:
            if not row[x]:
                x += 1
                continue
            start = x
            while x < size and row[x]:
                x += 1
            runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" '
            f'shape-rendering="crispEdges"><rect width="{size}" height="{size}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(runs)}"/></svg>')
