"""Tiled inference for images larger than memory or an engine's maximum shape.

The image is cut into overlapping tiles; each tile's output is weighted by a ramp that
falls to (almost) zero at its borders and the weighted sum is normalised, so seams blend
smoothly. Tile borders see reflect-padded context only at the image's own border. Works on
numpy arrays (engines) and torch tensors (models) alike, and imports no torch itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from udc_edge.core.errors import UsageError


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not at_start:
            w[:overlap] = np.minimum(w[:overlap], r)
        if not at_end:
            w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


def run_tiled(fn: Callable[[Any], Any], x: Any, tile: int, overlap: int = 32) -> Any:
    """Apply an image-to-image ``fn`` (NCHW -> NCHW, same size) tile by tile; ``x`` and the
    result are numpy arrays or torch tensors, as ``fn`` takes and returns."""
    if tile < 8:
        raise UsageError(f"--tile must be >= 8 pixels, got {tile}")
    if not 0 <= overlap < tile // 2:
        raise UsageError(f"--overlap must be in [0, tile/2), got {overlap} for tile {tile}")
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return fn(x)
    out = x * 0  # zeros of x's own kind, dtype and device
    norm = x[:1, :1] * 0
    step = tile - overlap
    ys, xs = _starts(h, tile, step), _starts(w, tile, step)
    for y in ys:
        for xx in xs:
            th, tw = min(tile, h), min(tile, w)
            patch = fn(x[:, :, y : y + th, xx : xx + tw])
            wy = _ramp(th, overlap, y == 0, y + th >= h)
            wx = _ramp(tw, overlap, xx == 0, xx + tw >= w)
            wgt = np.outer(wy, wx)[None, None]
            wgt = wgt.astype(x.dtype) if isinstance(x, np.ndarray) else x.new_tensor(wgt)
            out[:, :, y : y + th, xx : xx + tw] += patch * wgt
            norm[:, :, y : y + th, xx : xx + tw] += wgt
    return out / norm
