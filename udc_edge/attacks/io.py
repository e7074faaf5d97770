"""Lossless writing of adversarial inputs: float32 ``.npy`` or 16-bit PNG.

An 8-bit PNG rounds every pixel to 1/255, which erases (or doubles) a 1/255 perturbation,
so it is not offered. A 16-bit PNG keeps 1/65535 steps, and :func:`quantize_in_budget`
rounds each pixel to the nearest 16-bit level that stays inside the L-inf ball around the
clean input and inside [0, 1], so the file on disk still honours the attack's budget.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from udc_edge.core.errors import InputError, UsageError
from udc_edge.core.fileio import atomic_path, write_bytes_atomic
from udc_edge.data.images import encode_png, read_image

#: Formats for adversarial inputs, all lossless enough for a 1/255 budget.
ADV_FORMATS = ("npy", "png16")
PNG16_LEVELS = 65535


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a lossless adversarial format, else explain why not."""
    if fmt in ADV_FORMATS:
        return fmt
    hint = "use npy (exact float32) or png16 (16-bit PNG)"
    if str(fmt).lower() in ("png", "png8", "jpg", "jpeg"):
        raise UsageError(f"format {fmt!r} would round the perturbation to 1/255 or worse", hint)
    raise UsageError(f"unknown adversarial image format {fmt!r}", hint)


def quantize_in_budget(x_adv: np.ndarray, x: np.ndarray, eps: float | None) -> np.ndarray:
    """Round HxWx3 ``x_adv`` to 16-bit levels, staying within ``eps`` of ``x`` where possible.

    Where no 16-bit level lies inside the ball (an ``eps`` below one level around an
    off-grid ``x``), the nearest level is used. Returns the levels as ``uint16``.
    """
    q = np.rint(np.clip(x_adv, 0.0, 1.0) * PNG16_LEVELS)
    if eps is not None:
        lo = np.ceil(np.clip(x - eps, 0.0, 1.0) * PNG16_LEVELS - 1e-6)
        hi = np.floor(np.clip(x + eps, 0.0, 1.0) * PNG16_LEVELS + 1e-6)
        ok = lo <= hi
        q = np.where(ok, np.clip(q, lo, hi), q)
    return q.astype(np.uint16)


def encode_adversarial(x_adv: np.ndarray, x: np.ndarray, eps: float | None, fmt: str
                       ) -> tuple[bytes | np.ndarray, np.ndarray]:
    """``(payload, stored image)``: what to write and the float32 image it will read back as."""
    check_format(fmt)
    x_adv = np.asarray(x_adv, dtype=np.float32)
    if fmt == "npy":
        return x_adv, x_adv
    levels = quantize_in_budget(x_adv, np.asarray(x, dtype=np.float64), eps)
    stored = (levels.astype(np.float64) / PNG16_LEVELS).astype(np.float32)
    return encode_png(stored, 16), stored


def write_adversarial(path: str | os.PathLike, payload: bytes | np.ndarray) -> Path:
    """Write what :func:`encode_adversarial` made, atomically (``.npy`` or ``.png``)."""
    path = Path(path)
    if isinstance(payload, bytes):
        return write_bytes_atomic(path, payload)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(payload, dtype=np.float32), allow_pickle=False)
    return path


def read_adversarial(path: str | os.PathLike) -> np.ndarray:
    """Read an adversarial input back as float32 HxWx3 in [0, 1] (``.npy`` or 16-bit PNG)."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return read_image(path)[0]
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"cannot read {path} as a NumPy .npy array: {exc}",
                         "write it with udc-edge attack --format npy") from exc
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype.kind != "f":
        raise InputError(f"{path} holds a {arr.dtype} array of shape {arr.shape}",
                         "expected a float HxWx3 image in [0, 1]")
    return arr.astype(np.float32, copy=False)
