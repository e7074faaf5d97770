"""Pictures people look at: labelled image grids (PNG)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 14


def text_image(text: str, width: int, height: int = LABEL_HEIGHT) -> np.ndarray:
    """Black text on a white HxWx3 [0, 1] image: a column label, or a row's name cell (text
    centred vertically in a cell taller than a label)."""
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    xy = (2, 1) if height <= LABEL_HEIGHT else (3, height // 2 - 6)
    ImageDraw.Draw(canvas).text(xy, text, fill=(0, 0, 0), font=ImageFont.load_default())
    return np.asarray(canvas, np.float32) / 255.0


def image_grid(rows: list[list[np.ndarray]], col_labels: list[str] | None = None, pad: int = 2) -> np.ndarray:
    """Tile HxWx3 [0, 1] images into one picture, a row per list, labels above the columns.

    Images in one column may differ in size; each cell is padded to the largest one.
    """
    if not rows or not rows[0]:
        raise ValueError("image_grid needs at least one image")
    ncol = max(len(r) for r in rows)
    ch = max(im.shape[0] for r in rows for im in r)
    cw = max(im.shape[1] for r in rows for im in r)
    height = len(rows) * (ch + pad) + pad + (LABEL_HEIGHT if col_labels else 0)
    width = ncol * (cw + pad) + pad
    out = np.ones((height, width, 3), np.float32)
    top = pad
    if col_labels:
        for j, text in enumerate(col_labels[:ncol]):
            x = pad + j * (cw + pad)
            out[0:LABEL_HEIGHT, x : x + cw] = text_image(text, cw)
        top += LABEL_HEIGHT
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            y, x = top + i * (ch + pad), pad + j * (cw + pad)
            out[y : y + im.shape[0], x : x + im.shape[1]] = np.clip(im[..., :3], 0, 1)
    return out
