"""Labelled image grids for the built-in scripts: cells with optional margins, column labels on top, row labels on the
left; an inactive label (a prompt part not in that cell) is drawn grey and struck through."""
from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

TEXT = (0, 0, 0)
INACTIVE_TEXT = (153, 153, 153)
BACKGROUND = (255, 255, 255)
MIN_FONT_SIZE = 10


@dataclass
class GridAnnotation:
    text: str = ""
    is_active: bool = True


def compose(images: list[Image.Image], cols: int, margin: int = 0, cell: tuple[int, int] | None = None) -> Image.Image:
    """Images row by row, ``cols`` per row, ``margin`` pixels apart; each cell the size of ``cell`` (default: the
    first image). Missing images leave the cell black."""
    w, h = cell or images[0].size
    rows = math.ceil(len(images) / cols)
    grid = Image.new("RGB", (cols * w + (cols - 1) * margin, rows * h + (rows - 1) * margin), BACKGROUND)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB").resize((w, h)) if image.size != (w, h) else image.convert("RGB"),
                   (i % cols * (w + margin), i // cols * (h + margin)))
    return grid


def annotate(grid: Image.Image, cell_width: int, cell_height: int, column_labels: list[list[GridAnnotation]],
             row_labels: list[list[GridAnnotation]], margin: int = 0) -> Image.Image:
    """``grid`` with a band of column labels above and of row labels to the left (a band is left out when all its
    labels are empty). Each label is a list of lines."""
    font = ImageFont.load_default(size=max(MIN_FONT_SIZE, (cell_width + cell_height) // 25))
    line_height = int(font.size * 1.3)
    left = 0 if not _has_text(row_labels) else max(cell_width * 3 // 4, 4 * line_height)
    columns = [_wrap(lines, font, cell_width) for lines in column_labels]
    rows = [_wrap(lines, font, left) for lines in row_labels]
    top = 0 if not _has_text(column_labels) else max(len(c) for c in columns) * line_height + line_height // 2
    result = Image.new("RGB", (grid.width + left, grid.height + top), BACKGROUND)
    result.paste(grid, (left, top))
    draw = ImageDraw.Draw(result)
    for col, lines in enumerate(columns):
        x = left + col * (cell_width + margin) + cell_width / 2
        _draw_lines(draw, lines, font, x, top / 2, line_height)
    for row, lines in enumerate(rows):
        y = top + row * (cell_height + margin) + cell_height / 2
        _draw_lines(draw, lines, font, left / 2, y, line_height)
    return result


def _has_text(labels: list[list[GridAnnotation]]) -> bool:
    return any(a.text for lines in labels for a in lines)


def _wrap(lines: list[GridAnnotation], font: ImageFont.FreeTypeFont, width: int) -> list[GridAnnotation]:
    """Each annotation broken into lines no wider than ``width`` (words are never split)."""
    wrapped = []
    for annotation in lines:
        line = ""
        for word in annotation.text.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                wrapped.append(GridAnnotation(line, annotation.is_active))
                line = word
            else:
                line = candidate
        wrapped.append(GridAnnotation(line, annotation.is_active))
    return wrapped


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[GridAnnotation], font: ImageFont.FreeTypeFont, cx: float,
                cy: float, line_height: int) -> None:
    y = cy - len(lines) * line_height / 2
    for annotation in lines:
        color = TEXT if annotation.is_active else INACTIVE_TEXT
        draw.text((cx, y + line_height / 2), annotation.text, font=font, fill=color, anchor="mm")
        if not annotation.is_active and annotation.text:
            half = font.getlength(annotation.text) / 2
            draw.line((cx - half, y + line_height / 2, cx + half, y + line_height / 2), fill=color, width=1)
        y += line_height
