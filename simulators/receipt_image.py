"""A simulated receipt as a picture: what it would look like on paper, one pixel per dot.

Pillow's default font has ASCII only: é is drawn as e, and a character with no ASCII form (€,
£) as the font's box; the receipt's text (and its ``.txt`` file) has the character itself.
"""

from __future__ import annotations

import unicodedata

import qrcode
from PIL import Image, ImageDraw, ImageFont

from simulators.escpos_stream import CELL_HEIGHT, CELL_WIDTH, Line, QrCode, Sheet, cells

_LINE_GAP = 6  # dots between lines at the default line spacing
_FONT_SIZE = 16
_MARGIN = 12


def render_png(sheet: Sheet, dots_wide: int) -> Image.Image:
    """The receipt as it would look on paper, one pixel per dot."""
    font = ImageFont.load_default(size=_FONT_SIZE)
    pictures = [_line_picture(block, font) if isinstance(block, Line) else _qr_picture(block)
                for block in sheet.blocks]
    page = Image.new("L", (dots_wide, sum(p.height for p in pictures) + 2 * _MARGIN), 255)
    top = _MARGIN
    for block, picture in zip(sheet.blocks, pictures, strict=True):
        left = {"left": 0, "center": (dots_wide - picture.width) // 2,
                "right": dots_wide - picture.width}[block.align]
        page.paste(picture, (max(left, 0), top))
        top += picture.height
    return page


def _line_picture(line: Line, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
                  ) -> Image.Image:
    """One printed line: each character in its Font A cell, scaled by its size."""
    height = max((style.height for style, _ in line.runs), default=1) * CELL_HEIGHT
    width = cells(line.runs) * CELL_WIDTH
    picture = Image.new("L", (max(width, 1), height + _LINE_GAP), 255)
    left = 0
    for style, text in line.runs:
        paper, ink = (0, 255) if style.reverse else (255, 0)
        run = Image.new("L", (len(text) * CELL_WIDTH, CELL_HEIGHT), paper)
        draw = ImageDraw.Draw(run)
        for index, char in enumerate(text):
            centre = index * CELL_WIDTH + CELL_WIDTH // 2
            glyph = unicodedata.normalize("NFKD", char)[0]  # the default font is ASCII: é → e
            for offset in (0, 1) if style.bold else (0,):  # emphasis: strike twice, shifted
                draw.text((centre + offset, CELL_HEIGHT - 5), glyph, font=font, fill=ink,
                          anchor="ms")
        if style.underline:
            draw.rectangle((0, CELL_HEIGHT - style.underline, run.width, CELL_HEIGHT), fill=ink)
        scaled = run.resize((run.width * style.width, CELL_HEIGHT * style.height),
                            Image.Resampling.NEAREST)
        picture.paste(scaled, (left, height - scaled.height))
        left += scaled.width
    return picture


def _qr_picture(code: QrCode) -> Image.Image:
    symbol = qrcode.QRCode(box_size=code.module_dots, border=2,
                           error_correction=code.error_correction)
    symbol.add_data(code.payload)
    symbol.make(fit=True)
    return symbol.make_image().get_image().convert("L")
