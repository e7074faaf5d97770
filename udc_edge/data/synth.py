"""Synthetic paired UDC datasets: clean scene -> HDR -> display PSF + noise -> tone map.

``UDCSimulator`` makes one (degraded, ground truth) pair from a clean sRGB image and is
what training uses on the fly; ``write_synthetic_dataset`` writes a reproducible dataset
folder (same spec and seed, same bytes):

    OUT/lq/NNNN.png  OUT/gt/NNNN.png   16-bit PNG, tone-mapped network domain
    OUT/psf.npy                         H x W x 3 float32, each channel sums to 1
    OUT/psf.png                         log-scaled picture of the PSF
    OUT/dataset.json                    display, PSF parameters, seed, counts, source, stats
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np

from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import atomic_dir, check_output, write_json_atomic
from udc_edge.core.metrics import psnr
from udc_edge.core.progress import Advance, noop
from udc_edge.data.formation import DEFAULT_NOISE, SensorNoise, degrade, hdr_scene
from udc_edge.data.images import encode_png, write_png
from udc_edge.data.layouts import DisplayLayout, get_layout
from udc_edge.data.psf import compute_psf, psf_to_image
from udc_edge.data.sources import make_source
from udc_edge.data.tonemap import TONE_MAP_K, tone_map

DATASET_FORMAT = "udc-edge-synth/1"


class UDCSimulator:
    """Degrades clean images as a camera behind ``layout`` would see them."""

    def __init__(self, layout: DisplayLayout, noise: SensorNoise | None = DEFAULT_NOISE, lights: bool = True):
        self.layout = layout
        self.noise = noise
        self.lights = lights
        self.psf, self.psf_info = compute_psf(layout)
        self.transmission = layout.light_transmission

    @classmethod
    def for_display(cls, display: str | os.PathLike, noise: bool = True, lights: bool = True) -> UDCSimulator:
        return cls(get_layout(display), SensorNoise() if noise else None, lights)

    @property
    def min_size(self) -> int:
        return self.psf.shape[0] // 2 + 1

    def simulate(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(degraded, ground truth), both tone-mapped HxWx3 float32 in [0, 1)."""
        x = hdr_scene(clean, rng, lights=self.lights)
        y = degrade(x, self.psf, self.transmission, rng, self.noise)
        return tone_map(y), tone_map(x)


@dataclass(frozen=True)
class SynthSpec:
    """What to synthesise; validated against the display's PSF when used."""

    display: str = "poled"
    count: int = 16
    size: int = 128
    source: str = "photos"
    seed: int = 0
    noise: bool = True
    lights: bool = True

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"--count must be >= 1, got {self.count}")
        if self.size < 8:
            raise UsageError(f"--size must be >= 8 pixels, got {self.size}")


def image_rng(seed: int, index: int) -> np.random.Generator:
    """Independent generator for image ``index`` (so image i does not depend on count)."""
    return np.random.default_rng([seed, index])


def synth_pairs(display: str, source: str, count: int, size: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (degraded, ground truth) HxWx3 pairs: image i is a crop of ``source`` of
    ``size`` (at least the display's PSF minimum), degraded for ``display``, all drawn from
    ``image_rng(seed, i)``. The one recipe behind held-out sets, calibration images and
    export examples (callers crop to their own size)."""
    sim = UDCSimulator.for_display(display)
    sample, _ = make_source(source)
    size = max(size, sim.min_size)
    out = []
    for i in range(count):
        rng = image_rng(seed, i)
        out.append(sim.simulate(sample(size, rng), rng))
    return out


def write_synthetic_dataset(
    out: str | os.PathLike, spec: SynthSpec, overwrite: bool = False, progress: Advance = noop
) -> dict:
    """Write a synthetic dataset folder atomically; returns the ``dataset.json`` contents.

    ``out`` may not be, hold or lie inside the source folder or the display layout file."""
    check_output(out, (spec.source, spec.display), overwrite)
    sim = UDCSimulator.for_display(spec.display, noise=spec.noise, lights=spec.lights)
    if spec.size < sim.min_size:
        raise UsageError(
            f"--size {spec.size} is too small for the {sim.psf.shape[0]}x{sim.psf.shape[0]} PSF "
            f"of display {sim.layout.name!r}",
            f"use --size >= {sim.min_size}",
        )
    sample, source_desc = make_source(spec.source)
    psnrs = []
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "lq").mkdir()
        (tmp / "gt").mkdir()
        for i in range(spec.count):
            rng = image_rng(spec.seed, i)
            lq, gt = sim.simulate(sample(spec.size, rng), rng)
            name = f"{i:04d}.png"
            (tmp / "lq" / name).write_bytes(encode_png(lq, 16))
            (tmp / "gt" / name).write_bytes(encode_png(gt, 16))
            psnrs.append(psnr(lq, gt))
            progress(1)
        np.save(tmp / "psf.npy", sim.psf, allow_pickle=False)
        write_png(tmp / "psf.png", psf_to_image(sim.psf), bit_depth=8)
        meta = {
            "format": DATASET_FORMAT,
            "spec": asdict(spec),
            "display": sim.layout.to_dict(),
            "psf": sim.psf_info.to_dict(),
            "noise": asdict(sim.noise) if sim.noise else None,
            "tone_map": f"x / (x + {TONE_MAP_K})",
            "source": source_desc,
            "count": spec.count,
            "size": [spec.size, spec.size],
            "bit_depth": 16,
            "stats": {
                "psnr_lq_vs_gt_mean": round(float(np.mean(psnrs)), 3),
                "psnr_lq_vs_gt_min": round(float(np.min(psnrs)), 3),
                "psnr_lq_vs_gt_max": round(float(np.max(psnrs)), 3),
            },
        }
        write_json_atomic(tmp / "dataset.json", meta)
    return meta
