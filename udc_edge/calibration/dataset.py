"""Calibration sets from real inputs, never random tensors.

``--calib DIR`` is a paired dataset (its ``lq/`` side), a folder of images, or
``synth:poled`` / ``synth:toled`` (synthesised degraded captures of training photos).
Images are centre-cropped (or reflect-padded) to one size so they batch, and the set has
a hash so engines can record which calibration produced them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udc_edge.core.errors import DataError, UsageError


@dataclass
class CalibrationSet:
    """N x 3 x H x W float32 images plus where they came from and a content hash."""

    images: np.ndarray
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()

    def split(self, holdout: int) -> tuple[np.ndarray, np.ndarray]:
        """(calibration images, held-out images for fidelity checks)."""
        holdout = min(holdout, max(1, len(self.images) // 4))
        return self.images[:-holdout] if len(self.images) > holdout else self.images, self.images[-holdout:]

    def describe(self) -> dict:
        return {"source": self.source, "count": len(self.images), "size": list(self.images.shape[2:]),
                "sha256": self.sha256}


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    if h < size or w < size:
        img = np.pad(img, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="reflect")
        h, w = img.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return img[y : y + size, x : x + size]


def load_calibration_set(calib: str | Path, count: int = 16, size: int = 128, seed: int = 0,
                         strict: bool = False) -> CalibrationSet:
    """Up to ``count`` real degraded images of ``size`` x ``size`` from ``calib``.
    ``strict`` (a fixed-shape model): refuse an image smaller than ``size`` rather than pad it,
    since padding would calibrate on reflections the engine never sees."""
    if count < 1:
        raise UsageError(f"--calib-count must be >= 1, got {count}")
    key = str(calib)
    if key.startswith("synth:"):
        from udc_edge.data.synth import synth_pairs

        pairs = synth_pairs(key.split(":", 1)[1], "photos:train", count, size, seed + 424242)
        imgs = [lq[:size, :size] for lq, _ in pairs]
        return CalibrationSet(np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32), key)
    from udc_edge.data.readers import open_paired_dataset

    path = Path(key)
    if not path.exists():
        raise DataError(f"calibration source {path} does not exist", "give a folder of images or synth:poled")
    ds = open_paired_dataset(path)
    if len(ds) == 0:
        raise DataError(f"calibration folder {path} has no images", "give a folder of degraded images")
    imgs = []
    for i in range(min(count, len(ds))):
        pair = ds[i]
        h, w = pair.lq.shape[:2]
        if strict and (h < size or w < size):
            raise DataError(f"calibration image {pair.name!r} in {path} is {h}x{w}, smaller than the fixed-shape "
                            f"model's {size}x{size} input", "give images at least that large, or export with --dynamic")
        imgs.append(_fit(pair.lq, size))
    return CalibrationSet(np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32), str(path))
