"""Point-spread functions of a camera behind a display, by Fraunhofer diffraction.

For wavelength lambda, the far-field intensity is PSF = |FFT(aperture)|^2. Sampling the
aperture plane over an extent L = lambda * f / p makes one FFT bin equal one sensor pixel
of pitch p at focal length f, so longer wavelengths see a coarser aperture sampling and
their PSF comes out wider in exact proportion to lambda (R/B = 610/470). The PSF is
computed at the sensor's native pitch, cropped, binned into image pixels, mixed with the
substrate's haze (a wide Gaussian halo) and normalised so each channel sums to 1; light
lost in the panel is a separate per-channel transmittance (see ``layouts``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from udc_edge.core.errors import LayoutError
from udc_edge.data.layouts import DisplayLayout


@dataclass(frozen=True)
class PSFInfo:
    """How the PSF was made, for ``dataset.json``."""

    wavelengths_nm: tuple[float, ...]
    psf_size: int
    binning: int
    image_pixel_um: float
    aperture_extent_mm: tuple[float, ...]  # per wavelength
    energy_in_window: tuple[float, ...]  # diffraction energy inside the PSF window
    first_order_px: tuple[float, ...]  # spacing of diffraction orders, image pixels

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def _aperture(layout: DisplayLayout, grid: int, extent_m: float) -> np.ndarray:
    """Aperture transmission on a grid x grid raster covering extent_m (anti-aliased)."""
    o = layout.optics
    s = o.supersample
    n = grid * s
    dx = extent_m / n
    coords = (np.arange(n) - n / 2 + 0.5) * dx
    pitch = layout.pitch_um * 1e-6
    cell_res = 128
    cell = layout.cell(cell_res)
    idx = np.floor(((coords / pitch) % 1.0) * cell_res).astype(np.int64) % cell_res
    radius = o.pupil_diameter_mm * 1e-3 / 2
    ap = np.zeros((n, n), np.float32)
    rows = np.nonzero(np.abs(coords) <= radius)[0]
    for r in rows:  # row by row keeps memory small at large grids
        inside = coords**2 + coords[r] ** 2 <= radius**2
        ap[r, inside] = cell[idx[r], idx[inside]]
    return ap.reshape(grid, s, grid, s).mean(axis=(1, 3))


def _halo(size: int, sigma: float) -> np.ndarray:
    c = np.arange(size) - size // 2
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float64)


def _spectral_samples(center_nm: float, band_nm: float, n: int) -> list[tuple[float, float]]:
    """Wavelengths across a colour filter's band with Gaussian weights summing to 1."""
    if n <= 1 or band_nm <= 0:
        return [(center_nm, 1.0)]
    lams = np.linspace(center_nm - band_nm / 2, center_nm + band_nm / 2, n)
    w = np.exp(-0.5 * ((lams - center_nm) / (band_nm / 2.5)) ** 2)
    return list(zip(lams.tolist(), (w / w.sum()).tolist(), strict=True))


def _intensity(layout: DisplayLayout, extent_m: float, even_bin: bool) -> np.ndarray:
    """|FFT(aperture)|^2 with one bin per sensor pixel, centred at grid // 2."""
    m = layout.optics.grid
    ap = _aperture(layout, m, extent_m).astype(np.complex128)
    if even_bin:  # shift by half a sample so an even bin is centred on the optical axis
        ramp = np.exp(-1j * np.pi * (np.arange(m) - m / 2) / m)
        ap *= ramp[:, None] * ramp[None, :]
    field = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(ap)))
    return np.abs(field) ** 2


def compute_psf(layout: DisplayLayout, haze: bool = True) -> tuple[np.ndarray, PSFInfo]:
    """PSF (psf_size x psf_size x 3, float32, each channel sums to 1) and how it was made.

    Layouts given by their openings (presets, JSON) are computed once per process (0.3 s
    each; export, calibration, evaluation and training all simulate) and the array is
    shared read-only. A mask-image layout is computed every time: the mask does not take
    part in the layout's equality, so it cannot key a cache."""
    if layout.cell_mask is None:
        return _cached_psf(layout, haze)
    return _compute_psf(layout, haze)


@functools.lru_cache(maxsize=8)
def _cached_psf(layout: DisplayLayout, haze: bool) -> tuple[np.ndarray, PSFInfo]:
    psf, info = _compute_psf(layout, haze)
    psf.setflags(write=False)
    return psf, info


def _compute_psf(layout: DisplayLayout, haze: bool) -> tuple[np.ndarray, PSFInfo]:
    o = layout.optics
    m, b, k = o.grid, o.binning, o.psf_size
    p = o.sensor_pitch_um * 1e-6
    f = o.focal_length_mm * 1e-3
    d = o.pupil_diameter_mm * 1e-3
    if k * b > m:
        raise LayoutError(
            f"PSF window {k}x{b} sensor pixels exceeds the FFT grid {m}",
            "lower psf_size or binning, or raise optics.grid",
        )
    extents, energy, orders, channels = [], [], [], []
    for lam_nm in o.wavelengths_nm:
        lam = lam_nm * 1e-9
        extent = lam * f / p
        if 2 * d > lam * (1 - o.bandwidth_nm / lam_nm / 2) * f / p:
            raise LayoutError(
                f"pupil {o.pupil_diameter_mm} mm is too large for sensor pitch "
                f"{o.sensor_pitch_um} um at {lam_nm:.0f} nm (the PSF would alias)",
                "use a smaller pupil_diameter_mm or sensor_pitch_um",
            )
        inten = np.zeros((m, m))
        for lam_i, weight in _spectral_samples(lam_nm, o.bandwidth_nm, o.spectral_samples):
            inten += weight * _intensity(layout, lam_i * 1e-9 * f / p, even_bin=b % 2 == 0)
        total = inten.sum()
        start = m // 2 - (k * b) // 2
        win = inten[start : start + k * b, start : start + k * b]
        binned = win.reshape(k, b, k, b).sum(axis=(1, 3))
        energy.append(float(binned.sum() / total))
        binned = binned / binned.sum()
        if haze and layout.haze > 0:
            binned = (1 - layout.haze) * binned + layout.haze * _halo(k, layout.haze_sigma_px)
        channels.append(binned / binned.sum())
        extents.append(extent * 1e3)
        orders.append(extent / (layout.pitch_um * 1e-6) / b)
    psf = np.stack(channels, axis=-1).astype(np.float32)
    info = PSFInfo(
        wavelengths_nm=tuple(o.wavelengths_nm),
        psf_size=k,
        binning=b,
        image_pixel_um=o.sensor_pitch_um * b,
        aperture_extent_mm=tuple(round(e, 4) for e in extents),
        energy_in_window=tuple(round(e, 4) for e in energy),
        first_order_px=tuple(round(v, 3) for v in orders),
    )
    return psf, info


def psf_to_image(psf: np.ndarray, decades: float = 5.0, zoom: int = 4) -> np.ndarray:
    """Log-scaled RGB picture of a PSF (each channel relative to its peak), enlarged."""
    rel = psf / psf.max(axis=(0, 1), keepdims=True)
    img = np.clip(1 + np.log10(np.maximum(rel, 1e-12)) / decades, 0, 1).astype(np.float32)
    if zoom > 1:
        img = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
    return img


def write_psf(display: str, out_png) -> dict:
    """Compute the PSF of ``display``; write ``out_png`` (log picture) and ``.npy`` beside it."""
    import io
    from pathlib import Path

    from udc_edge.core.fileio import write_bytes_atomic
    from udc_edge.data.images import write_png
    from udc_edge.data.layouts import get_layout

    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        from udc_edge.core.errors import UsageError

        raise UsageError(f"--out {out_png} must end in .png", "the .npy array is written beside it")
    layout = get_layout(display)
    psf, info = compute_psf(layout)
    buf = io.BytesIO()
    np.save(buf, psf, allow_pickle=False)
    write_bytes_atomic(out_png.with_suffix(".npy"), buf.getvalue())
    write_png(out_png, psf_to_image(psf), bit_depth=8)
    return {**info.to_dict(), "light_transmission": list(layout.light_transmission)}
