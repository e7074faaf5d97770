"""Reading and writing images in the toolkit's convention: float32 HxWx3 RGB in [0, 1].

Conversions applied on read (documented, never silent about what they cannot do):
grayscale is replicated to three channels; an alpha channel is dropped (UDC captures
have none); 8-bit and 16-bit files are scaled to [0, 1]. 16-bit PNGs are read and
written with pypng because Pillow truncates 16-bit RGB to 8 bits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import png
from PIL import Image, UnidentifiedImageError

from udc_edge.core.errors import InputError
from udc_edge.core.fileio import atomic_path

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ImageInfo:
    """What a file held before conversion: bit depth and channel count."""

    bit_depth: int
    channels: int


def _png_bit_depth(path: Path) -> int | None:
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def _read_png16(path: Path) -> np.ndarray:
    try:
        width, height, rows, _info = png.Reader(filename=str(path)).asDirect()
        arr = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
    except (png.Error, ValueError, EOFError) as exc:
        raise InputError(f"cannot read image {path}: {exc}", "re-save it as PNG") from exc
    return arr.reshape(height, width, -1)


def read_image_raw(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as an integer HxWxC array and its bit depth (no scaling)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist", "check the path")
    if _png_bit_depth(path) == 16:
        arr = _read_png16(path)
        return arr, ImageInfo(16, arr.shape[2])
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im)
                if arr.size and (arr.min() < 0 or arr.max() > 65535):  # 32-bit integers: never wrap modulo 2**16
                    raise InputError(
                        f"image {path} holds 32-bit integers ({int(arr.min())}..{int(arr.max())}), outside the "
                        "16-bit range udc-edge reads",
                        "convert it to a 16-bit PNG (or a linear .npy) with the scaling you intend",
                    )
                arr = arr.astype(np.uint16)
                depth = 16
            else:
                if im.mode not in ("L", "RGB", "RGBA", "LA"):
                    im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
                arr = np.asarray(im)
                depth = 8
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(
            f"cannot read image {path}: not a readable image file",
            "give a PNG, JPEG, BMP or TIFF file",
        ) from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, ImageInfo(depth, arr.shape[2])


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """Read an image as float32 HxWx3 RGB in [0, 1], with what the file held."""
    arr, info = read_image_raw(path)
    scale = 65535.0 if info.bit_depth == 16 else 255.0
    img = arr.astype(np.float32) / scale
    return to_rgb(img), info


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Grayscale (1 or 2 channels) to RGB by replication; RGBA to RGB by dropping alpha."""
    if img.ndim == 2:
        img = img[:, :, None]
    c = img.shape[2]
    if c in (1, 2):
        img = np.repeat(img[:, :, :1], 3, axis=2)
    elif c == 4:
        img = img[:, :, :3]
    elif c != 3:
        raise InputError(f"image has {c} channels", "give a grayscale, RGB or RGBA image")
    return np.ascontiguousarray(img, dtype=np.float32)


def quantize(img: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] image to uint8/uint16 with rounding (values are clipped to [0, 1])."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth}")
    if not np.isfinite(img).all():
        raise InputError("image contains NaN or Inf values", "check the model or input that produced it")
    peak = 255 if bit_depth == 8 else 65535
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.round(np.clip(img, 0.0, 1.0) * peak).astype(dtype)


def encode_png(img: np.ndarray, bit_depth: int = 16) -> bytes:
    """Encode a float [0, 1] HxWx3 (or HxW) image as PNG bytes of the given bit depth."""
    import io

    q = quantize(img, bit_depth)
    if q.ndim == 3 and q.shape[2] == 1:
        q = q[:, :, 0]
    buf = io.BytesIO()
    if bit_depth == 16:
        greyscale = q.ndim == 2
        h, w = q.shape[:2]
        png.Writer(w, h, greyscale=greyscale, bitdepth=16, compression=6).write(
            buf, q.reshape(h, -1)
        )
    else:
        Image.fromarray(q).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_png(path: str | os.PathLike, img: np.ndarray, bit_depth: int = 16) -> Path:
    """Write a float [0, 1] image as an 8- or 16-bit PNG, atomically."""
    data = encode_png(img, bit_depth)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files in a folder (not recursive), sorted by name."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def nchw_array(img: np.ndarray) -> np.ndarray:
    """One HxWx3 image as a contiguous 1x3xHxW float32 array (the layout engines take)."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))[None]


def to_nchw(img: np.ndarray) -> torch.Tensor:
    """One HxWx3 image as a 1x3xHxW float32 tensor (the layout networks take; needs torch)."""
    from udc_edge.core.extras import require_torch

    return require_torch("a torch tensor").from_numpy(nchw_array(img))


def to_hwc(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The first image of an NCHW tensor or array as HxWx3 float32 numpy."""
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    return np.ascontiguousarray(arr[0].transpose(1, 2, 0), dtype=np.float32)
