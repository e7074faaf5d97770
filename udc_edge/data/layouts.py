"""Display pixel layouts as aperture masks, and the optics that turn them into PSFs.

A display panel in front of the lens is a periodic grid of opaque circuitry with small
transparent openings. Inside the lens pupil (a disc) this grid is the aperture the light
passes through. A layout is one unit cell (pitch x pitch) with its openings, tiled across
the pupil, plus what the panel's substrate does to the light that gets through:
per-channel transmittance and a scattered haze fraction.

Presets reproduce the two panel families of the UDC 2020 challenge:

* ``poled`` (pentile-like P-OLED): four small round openings (39 % open) behind a
  yellowish polyimide substrate. Little light gets through (about 12/9/5 % in R/G/B), so
  the camera must amplify noise; the substrate adds a wide haze.
* ``toled`` (transparent OLED): one tall narrow slit per cell (36 % open) behind a clearer
  substrate, so about 18-20 % of the light passes; the slit grating throws light into long
  horizontal diffraction orders, i.e. strong blur.

A user layout is a JSON file (``openings`` list, or ``unit_cell`` naming a mask PNG) or a
mask PNG of one unit cell (white = open) with the ``poled`` optics and substrate.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from udc_edge.core.errors import LayoutError

RGB_WAVELENGTHS_NM = (610.0, 530.0, 470.0)


@dataclass(frozen=True)
class Opening:
    """One transparent opening in the unit cell, in cell-fraction coordinates (0..1)."""

    cx: float
    cy: float
    w: float
    h: float
    shape: str = "rect"  # "rect" or "ellipse"


@dataclass(frozen=True)
class Optics:
    """Camera behind the panel.

    The PSF is computed at the sensor's native pitch and then binned ``binning`` x
    ``binning`` into image pixels (synthetic images stand for binned captures, so the
    diffraction orders land a handful of pixels apart, as in a downscaled UDC photo).
    """

    focal_length_mm: float = 4.0
    pupil_diameter_mm: float = 1.0
    sensor_pitch_um: float = 0.85
    binning: int = 4
    wavelengths_nm: tuple[float, float, float] = RGB_WAVELENGTHS_NM
    bandwidth_nm: float = 60.0  # each colour filter integrates this band (smears orders)
    spectral_samples: int = 5
    psf_size: int = 63  # image pixels, odd
    grid: int = 512  # FFT samples across the aperture plane
    supersample: int = 2  # aperture anti-aliasing factor


@dataclass(frozen=True)
class DisplayLayout:
    """A display panel: unit cell, pitch, substrate transmittance and haze."""

    name: str
    pitch_um: float
    openings: tuple[Opening, ...] = ()
    transmittance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    haze: float = 0.0  # fraction of transmitted light scattered into a wide halo
    haze_sigma_px: float = 8.0  # halo width in image pixels
    optics: Optics = field(default_factory=Optics)
    cell_mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.pitch_um <= 0:
            raise LayoutError(f"layout {self.name!r}: pitch_um must be > 0, got {self.pitch_um}")
        if self.cell_mask is None and not self.openings:
            raise LayoutError(
                f"layout {self.name!r} has no openings: no light would reach the camera",
                "add at least one opening, or give a unit-cell mask with white open areas",
            )
        if self.cell_mask is not None and float(np.max(self.cell_mask)) <= 0:
            raise LayoutError(
                f"layout {self.name!r}: the unit-cell mask has no open (white) pixels",
                "white marks the openings; check the mask is not inverted",
            )
        if not all(0 < t <= 1 for t in self.transmittance):
            raise LayoutError(
                f"layout {self.name!r}: transmittance must be in (0, 1] per channel, "
                f"got {self.transmittance}"
            )
        if not 0 <= self.haze < 1:
            raise LayoutError(f"layout {self.name!r}: haze must be in [0, 1), got {self.haze}")
        for o in self.openings:
            if o.w <= 0 or o.h <= 0 or o.shape not in ("rect", "ellipse"):
                raise LayoutError(
                    f"layout {self.name!r}: bad opening {o}",
                    "w and h must be > 0 and shape 'rect' or 'ellipse'",
                )
        if self.optics.psf_size % 2 == 0 or self.optics.psf_size < 3:
            raise LayoutError(f"psf_size must be odd and >= 3, got {self.optics.psf_size}")

    def cell(self, n: int) -> np.ndarray:
        """Unit-cell transmission (0..1) rendered on an n x n grid."""
        if self.cell_mask is not None:
            from PIL import Image

            m = Image.fromarray((np.clip(self.cell_mask, 0, 1) * 255).astype(np.uint8))
            return np.asarray(m.resize((n, n), Image.BILINEAR), dtype=np.float32) / 255.0
        c = (np.arange(n) + 0.5) / n
        yy, xx = np.meshgrid(c, c, indexing="ij")
        out = np.zeros((n, n), np.float32)
        for o in self.openings:
            # Openings wrap around the cell border so a cell may straddle its edge.
            dx = (xx - o.cx + 0.5) % 1.0 - 0.5
            dy = (yy - o.cy + 0.5) % 1.0 - 0.5
            if o.shape == "rect":
                inside = (np.abs(dx) <= o.w / 2) & (np.abs(dy) <= o.h / 2)
            else:
                inside = (dx / (o.w / 2)) ** 2 + (dy / (o.h / 2)) ** 2 <= 1
            out[inside] = 1.0
        return out

    @property
    def open_fraction(self) -> float:
        """Fraction of the panel area that is open."""
        return float(self.cell(256).mean())

    @property
    def light_transmission(self) -> tuple[float, float, float]:
        """Fraction of light per channel that reaches the sensor (openings x substrate)."""
        f = self.open_fraction
        return tuple(f * t for t in self.transmittance)  # type: ignore[return-value]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("cell_mask")
        d["openings"] = [asdict(o) for o in self.openings]
        d["cell_mask"] = self.cell_mask is not None
        d["open_fraction"] = round(self.open_fraction, 5)
        d["light_transmission"] = [round(t, 5) for t in self.light_transmission]
        return d


PRESETS: dict[str, DisplayLayout] = {
    "poled": DisplayLayout(
        name="poled",
        pitch_um=60.0,
        openings=(  # pentile-like: two larger and two smaller round openings per cell
            Opening(0.25, 0.25, 0.40, 0.40, "ellipse"),
            Opening(0.75, 0.75, 0.40, 0.40, "ellipse"),
            Opening(0.25, 0.75, 0.30, 0.30, "ellipse"),
            Opening(0.75, 0.25, 0.30, 0.30, "ellipse"),
        ),
        transmittance=(0.30, 0.24, 0.14),  # yellowish polyimide: least blue gets through
        haze=0.12,
        haze_sigma_px=8.0,
    ),
    "toled": DisplayLayout(
        name="toled",
        pitch_um=60.0,
        openings=(Opening(0.5, 0.5, 0.40, 0.90, "rect"),),  # one tall slit per cell
        transmittance=(0.55, 0.54, 0.50),
        haze=0.03,
        haze_sigma_px=8.0,
    ),
}


def _layout_from_json(path: Path) -> DisplayLayout:
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LayoutError(f"cannot read layout {path}: {exc}", "give a valid JSON file") from exc
    if not isinstance(spec, dict):
        raise LayoutError(f"layout {path}: top level must be a JSON object")
    base = PRESETS["poled"]
    known = {"name", "pitch_um", "openings", "unit_cell", "transmittance", "haze", "haze_sigma_px", "optics"}
    unknown = set(spec) - known
    if unknown:
        raise LayoutError(f"layout {path}: unknown keys {sorted(unknown)}", f"allowed: {sorted(known)}")
    try:
        openings = tuple(Opening(**o) for o in spec.get("openings", []))
        optics = replace(base.optics, **{
            k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("optics", {}).items()
        })
    except TypeError as exc:
        raise LayoutError(f"layout {path}: {exc}", "see docs/data.md for the layout format") from exc
    mask = None
    if "unit_cell" in spec:
        mask = _read_mask(path.parent / spec["unit_cell"])
    return DisplayLayout(
        name=spec.get("name", path.stem),
        pitch_um=float(spec.get("pitch_um", base.pitch_um)),
        openings=openings,
        transmittance=tuple(spec.get("transmittance", base.transmittance)),
        haze=float(spec.get("haze", base.haze)),
        haze_sigma_px=float(spec.get("haze_sigma_px", base.haze_sigma_px)),
        optics=optics,
        cell_mask=mask,
    )


def _read_mask(path: Path) -> np.ndarray:
    from udc_edge.core.errors import InputError
    from udc_edge.data.images import read_image

    try:
        img, _ = read_image(path)
    except InputError as exc:
        raise LayoutError(f"cannot read unit-cell mask {path}: {exc.message}") from exc
    return img.mean(axis=2)


def get_layout(display: str | os.PathLike) -> DisplayLayout:
    """A preset name (``poled``, ``toled``), a layout JSON file or a unit-cell mask PNG."""
    key = str(display)
    if key in PRESETS:
        return PRESETS[key]
    path = Path(key)
    if path.suffix.lower() == ".json" and path.is_file():
        return _layout_from_json(path)
    if path.suffix.lower() in (".png", ".bmp", ".tif", ".tiff") and path.is_file():
        base = PRESETS["poled"]
        return replace(base, name=path.stem, openings=(), cell_mask=_read_mask(path))
    raise LayoutError(
        f"unknown display {key!r}",
        f"use a preset ({', '.join(PRESETS)}), a layout .json file or a unit-cell mask .png",
    )
