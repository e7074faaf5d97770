"""Clean scene sources: photos shipped inside installed packages, dead leaves, user folders.

Nothing is downloaded. Photos come from scikit-image's bundled ``skimage.data`` and
matplotlib's sample data (grayscale ones replicated to RGB). They are split into a fixed
``train`` and held-out ``test`` list so a restorer can be evaluated on photos it never saw.
Each source returns random crops of the requested size, deterministic for a generator.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from udc_edge.core.errors import DataError, InputError, UsageError
from udc_edge.data.images import list_images, read_image, to_rgb

_SKIMAGE_PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "hubble_deep_field",
    "immunohistochemistry", "retina", "colorwheel", "coins", "moon", "page", "text",
    "clock", "grass", "gravel", "brick", "cell",
)
TEST_PHOTOS = ("astronaut", "coffee", "rocket", "brick", "grace_hopper")


def _load_bundled(name: str) -> np.ndarray:
    if name == "grace_hopper":
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return to_rgb(np.asarray(Image.open(f).convert("RGB"), np.float32) / 255.0)
    if name.startswith("stereo_motorcycle"):
        import skimage.data

        return to_rgb(skimage.data.stereo_motorcycle()[0].astype(np.float32) / 255.0)
    import skimage.data

    img = getattr(skimage.data, name)()
    return to_rgb(img.astype(np.float32) / 255.0)


@functools.cache
def bundled_photo(name: str) -> np.ndarray:
    """One bundled photo as float32 RGB [0, 1] (cached; treat as read-only)."""
    img = _load_bundled(name)
    img.setflags(write=False)
    return img


def photo_names(split: str = "all") -> tuple[str, ...]:
    """Names of bundled photos in a split: ``all``, ``train`` or ``test``."""
    every = _SKIMAGE_PHOTOS + ("stereo_motorcycle", "grace_hopper")
    if split == "all":
        return every
    if split == "test":
        return TEST_PHOTOS
    if split == "train":
        return tuple(n for n in every if n not in TEST_PHOTOS)
    raise DataError(f"unknown photo split {split!r}", "use photos, photos:train or photos:test")


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size crop at a random scale (0.5-1x, upscaling small images as needed)."""
    h, w = img.shape[:2]
    lo = size / min(h, w)
    scale = max(lo, rng.uniform(0.5, 1.0)) if lo < 1 else lo
    if abs(scale - 1.0) > 1e-3:
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        # Pillow resizes float images per channel only ("F" mode), without 8-bit rounding.
        chans = [
            np.asarray(Image.fromarray(img[..., c].astype(np.float32), mode="F").resize(
                (nw, nh), Image.BICUBIC))
            for c in range(3)
        ]
        img = np.clip(np.stack(chans, -1), 0, 1)
        h, w = nh, nw
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    out = img[y : y + size, x : x + size]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


def dead_leaves(size: int, rng: np.random.Generator, rmin: float = 1.5, rmax: float | None = None) -> np.ndarray:
    """Dead-leaves image: occluding discs with radius density ~ r^-3 (scale invariant).

    This reproduces the power-law spectrum and sharp occlusion edges of natural images.
    Disc colours are drawn from bundled photos' pixels when available, else uniformly.
    """
    rmax = rmax or size / 3
    img = np.full((size, size, 3), -1.0, np.float32)
    covered = np.zeros((size, size), bool)
    yy, xx = np.mgrid[0:size, 0:size]
    palette = _palette()
    for _ in range(20000):
        if covered.all():
            break
        # inverse-CDF sampling of p(r) ~ r^-3 on [rmin, rmax]
        u = rng.random()
        r = 1.0 / np.sqrt(1.0 / rmin**2 - u * (1.0 / rmin**2 - 1.0 / rmax**2))
        cy, cx = rng.uniform(-r, size + r, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & ~covered
        if not disc.any():
            continue
        colour = palette[int(rng.integers(len(palette)))]
        shade = 1.0 + 0.15 * ((xx - cx) / max(r, 1)) * rng.uniform(-1, 1)
        img[disc] = np.clip(colour * shade[disc][:, None], 0, 1)
        covered |= disc
    img[img < 0] = 0.5
    return img


@functools.lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    rng = np.random.default_rng(0)
    px = [bundled_photo(n).reshape(-1, 3) for n in ("coffee", "chelsea", "rocket")]
    allpx = np.concatenate(px)
    return allpx[rng.integers(0, len(allpx), 4096)].astype(np.float32)


def folder_images(folder: Path) -> list[Path]:
    """User images in a folder; an empty or missing folder is a clear error."""
    if not folder.is_dir():
        raise InputError(f"source folder {folder} does not exist", "give a folder of images")
    files = list_images(folder)
    if not files:
        raise DataError(
            f"source folder {folder} has no images",
            "put .png/.jpg/.bmp/.tif files in it (not in sub-folders)",
        )
    return files


Source = Callable[[int, np.random.Generator], np.ndarray]


def make_source(spec: str | os.PathLike) -> tuple[Source, dict]:
    """A clean-image source from ``photos[:train|test]``, ``deadleaves``, ``mixed`` or a folder.

    Returns ``sample(size, rng) -> HxWx3 float32`` and a JSON-able description.
    """
    key = str(spec)
    builtin = key in ("photos", "deadleaves", "mixed") or key.startswith(("photos:", "mixed:"))
    if builtin and isinstance(spec, str) and Path(key).exists():  # never silently pick one of the two
        alias = {"photos": "photos:all", "mixed": "mixed:train"}.get(key)
        raise UsageError(
            f"--source {key} names both a built-in source and the folder {key} here",
            f"write ./{key} for the folder, or "
            + (f"{alias} for the built-in one" if alias else "run from another folder for the built-in one"),
        )
    if key == "photos" or key.startswith("photos:"):
        split = key.split(":", 1)[1] if ":" in key else "all"
        names = photo_names(split)

        def sample(size: int, rng: np.random.Generator) -> np.ndarray:
            return random_crop(bundled_photo(names[int(rng.integers(len(names)))]), size, rng)

        return sample, {"kind": "photos", "split": split, "photos": list(names)}
    if key == "deadleaves":
        return dead_leaves, {"kind": "deadleaves"}
    if key == "mixed" or key.startswith("mixed:"):
        split = key.split(":", 1)[1] if ":" in key else "train"
        photos, _ = make_source(f"photos:{split}")

        def mixed(size: int, rng: np.random.Generator) -> np.ndarray:
            return photos(size, rng) if rng.random() < 0.7 else dead_leaves(size, rng)

        return mixed, {"kind": "mixed", "split": split, "deadleaves_fraction": 0.3}
    path = Path(key)
    if not path.exists():
        raise InputError(
            f"unknown source {key!r}",
            "use photos, photos:train, photos:test, deadleaves, mixed or a folder of images",
        )
    files = folder_images(path)

    def from_folder(size: int, rng: np.random.Generator) -> np.ndarray:
        img, _ = read_image(files[int(rng.integers(len(files)))])
        return random_crop(img, size, rng)

    return from_folder, {"kind": "folder", "path": str(path), "count": len(files)}
