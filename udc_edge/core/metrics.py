"""Image quality metrics on [0, 1] images (scikit-image's PSNR and SSIM, data_range 1)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def _hwc(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise ValueError("metrics take one image at a time (batch of 1)")
        img = img[0]
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[2] not in (1, 3):
        img = img.transpose(1, 2, 0)  # CHW -> HWC
    return img


def psnr(pred: np.ndarray, ref: np.ndarray, max_db: float = 100.0) -> float:
    """PSNR in dB of images clipped to [0, 1] (capped at ``max_db`` so averages of identical images stay finite)."""
    p, r = np.clip(_hwc(pred), 0, 1), np.clip(_hwc(ref), 0, 1)
    if np.array_equal(p, r):
        return max_db
    return float(min(max_db, peak_signal_noise_ratio(r, p, data_range=1.0)))


def ssim(pred: np.ndarray, ref: np.ndarray) -> float:
    """Structural similarity (Gaussian window, as in Wang et al. 2004) over RGB channels."""
    p, r = np.clip(_hwc(pred), 0, 1), np.clip(_hwc(ref), 0, 1)
    win = min(7, *(s if s % 2 else s - 1 for s in r.shape[:2]))
    return float(
        structural_similarity(
            r, p, data_range=1.0, channel_axis=-1 if r.ndim == 3 else None,
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, win_size=win,
        )
    )
