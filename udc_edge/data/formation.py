"""UDC image formation, as in DISCNet's synthetic set, plus the sensor's noise.

    y = clip(g * (N(T * (x * k)) ), 0, M)        network input = tone_map(y)

x is the linear HDR scene, k the per-channel PSF (FFT convolution with reflect padding),
T the panel's per-channel light transmission, N Poisson-Gaussian sensor noise on the
photo-electrons that actually arrive, g = 1/T the camera's exposure and white-balance gain
that restores brightness (and so amplifies the noise of a dim P-OLED), and M the sensor's
saturation. Highlights far above M spread by the PSF into flare before the clip; that is
why scenes are made HDR (``hdr_scene``): flare only appears where the scene exceeds the
display range. The ground truth is tone_map(x), unclipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from udc_edge.core.errors import DataError


@dataclass(frozen=True)
class SensorNoise:
    """Poisson-Gaussian noise: photo-electrons at unit radiance with no panel, read noise."""

    full_well: float = 20000.0
    read_sigma: float = 0.0005  # in units of unit radiance, before gain


DEFAULT_NOISE = SensorNoise()


def srgb_to_linear(img: np.ndarray) -> np.ndarray:
    """sRGB-encoded [0, 1] to linear [0, 1]."""
    img = np.clip(img, 0.0, 1.0)
    return np.where(img <= 0.04045, img / 12.92, ((img + 0.055) / 1.055) ** 2.4).astype(np.float32)


def hdr_scene(ldr: np.ndarray, rng: np.random.Generator, lights: bool = True) -> np.ndarray:
    """Linear HDR scene from an sRGB image: inverse tone mapping plus point light sources.

    Near-saturated regions (luminance > 0.85) are boosted smoothly up to 12x, as a clipped
    sky or lamp would be; with ``lights`` 0-3 small bright discs of 15-150x are added.
    """
    lin = srgb_to_linear(ldr)
    lum = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    t = np.clip((lum - 0.85) / 0.15, 0.0, 1.0)
    x = lin * (1.0 + 11.0 * t**2)[..., None]
    if lights:
        h, w = x.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(rng.integers(0, 4))):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            r = rng.uniform(0.8, max(1.0, min(h, w) / 40))
            power = rng.uniform(15.0, 150.0)
            tint = np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.55, 1.0)], np.float32)
            disc = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)).astype(np.float32)
            x = x + power * disc[..., None] * tint
    return x.astype(np.float32)


def convolve_psf(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Per-channel FFT convolution, 'same' size, with reflect padding at the borders."""
    k = psf.shape[0]
    r = k // 2
    h, w = x.shape[:2]
    if min(h, w) <= r:
        raise DataError(
            f"image size {h}x{w} is too small for the {k}x{k} PSF",
            f"use images of at least {r + 1} pixels per side, or a smaller psf_size",
        )
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    out = np.stack(
        [fftconvolve(padded[..., c], psf[..., c], mode="same") for c in range(x.shape[2])], -1
    )
    return np.maximum(out[r : r + h, r : r + w], 0.0).astype(np.float32)


def degrade(
    x: np.ndarray,
    psf: np.ndarray,
    transmission: tuple[float, float, float],
    rng: np.random.Generator,
    noise: SensorNoise | None = DEFAULT_NOISE,
    saturation: float = 1.0,
) -> np.ndarray:
    """Linear degraded capture y from linear HDR scene x (see module docstring)."""
    t = np.asarray(transmission, np.float32)
    arrived = convolve_psf(x, psf) * t
    if noise is not None:
        electrons = rng.poisson(arrived * noise.full_well).astype(np.float32) / noise.full_well
        arrived = electrons + rng.normal(0.0, noise.read_sigma, arrived.shape).astype(np.float32)
    return np.clip(arrived / t, 0.0, saturation).astype(np.float32)
