"""Restore image files with a model or an engine: any size (padding), optional tiling,
same bit depth.

A torch model is padded to its multiple by ``run_padded``; an engine (any backend
``load_engine`` returns) pads on the host itself, and runs without torch. Outputs are PNGs
named like the inputs; a 16-bit input gives a 16-bit output. With a ground-truth folder,
PSNR/SSIM of input and output are reported per image. All or nothing: the output folder
appears only once every image is restored.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.core.errors import DataError, InputError
from udc_edge.core.extras import require_torch
from udc_edge.core.fileio import atomic_dir, check_output
from udc_edge.core.metrics import psnr, ssim
from udc_edge.core.progress import Advance, noop
from udc_edge.core.tiling import run_tiled
from udc_edge.data.images import list_images, nchw_array, read_image, to_hwc, write_png
from udc_edge.engines.base import Engine


@dataclass
class RestoreReport:
    out_dir: str
    images: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def mean(self, key: str) -> float | None:
        vals = [im[key] for im in self.images if im.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = {k: self.mean(k) for k in ("input_psnr", "output_psnr", "input_ssim", "output_ssim")}
        return d


def collect_inputs(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of image files; refuse empties and inputs that
    would share an output name (``good.jpg`` and ``good.png`` both give ``good.png``)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DataError(f"folder {p} has no images", "give .png/.jpg/.bmp/.tif files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"input {p} does not exist", "check the path")
    seen: dict[str, Path] = {}
    for f in files:
        key = output_name(f).casefold()  # one file on a case-insensitive disk
        if key in seen:
            raise DataError(f"inputs {seen[key]} and {f} would both be written as {output_name(f)}",
                            "restore them separately or rename one")
        seen[key] = f
    return files


def output_name(f: Path) -> str:
    """The output file name of input ``f``."""
    return f.stem + ".png"


def restore_array(model: Any, img: np.ndarray, tile: int = 0, overlap: int = 32) -> np.ndarray:
    """Restore one HxWx3 float image with a torch model or an :class:`Engine` (padding to
    its multiple, tiling if asked)."""
    if not np.isfinite(img).all():
        raise InputError("input image contains NaN or Inf", "fix the file")
    x = nchw_array(img)
    if isinstance(model, Engine):
        y = run_tiled(model, x, tile, overlap) if tile else model(x)
        return np.clip(to_hwc(y), 0.0, 1.0)
    torch = require_torch("restoring with a torch model (an engine needs none)")
    from udc_edge.models.padding import run_padded

    with torch.no_grad():
        def fn(t):
            return run_padded(model, t)
        xt = torch.from_numpy(x)
        y = run_tiled(fn, xt, tile, overlap) if tile else fn(xt)
    return to_hwc(y.clamp(0, 1))


def restore_files(model: Any, inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
                  gt_dir: str | os.PathLike | None = None, tile: int = 0, overlap: int = 32,
                  progress: Advance = noop, overwrite: bool = False,
                  also_inputs: tuple[str | os.PathLike, ...] = ()) -> RestoreReport:
    """Restore every input image into ``out_dir`` with a torch model or an activated
    :class:`Engine`; compare with ``gt_dir`` when given.

    ``out_dir`` must not be, hold or lie inside an input (``also_inputs``: e.g. the model's
    folder); it is built under a temporary name and appears only when every image succeeded.
    """
    files = collect_inputs(list(inputs))
    check_output(out_dir, (*inputs, gt_dir, *also_inputs), overwrite)
    gt_dir = Path(gt_dir) if gt_dir else None
    if gt_dir is not None and not gt_dir.is_dir():
        raise InputError(f"--gt folder {gt_dir} does not exist")
    out_dir = Path(out_dir)
    report = RestoreReport(out_dir=str(out_dir))
    t0 = time.perf_counter()
    if not isinstance(model, Engine):
        model.eval()
    gt_files = {p.stem: p for p in list_images(gt_dir)} if gt_dir is not None else {}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for f in files:
            report.images.append(_restore_one(model, f, tmp, gt_dir, gt_files, tile, overlap))
            progress(1)
    report.seconds = time.perf_counter() - t0
    return report


def _restore_one(model: Any, f: Path, out: Path, gt_dir: Path | None, gt_files: dict[str, Path],
                 tile: int, overlap: int) -> dict:
    """Restore one file into ``out``; its metrics against the ground truth when there is one."""
    img, info = read_image(f)
    restored = restore_array(model, img, tile, overlap)
    entry: dict = {"name": f.name, "size": list(img.shape[:2]), "bit_depth": info.bit_depth}
    if gt_dir is not None:
        if f.stem not in gt_files:
            raise DataError(f"no ground truth for {f.name} in {gt_dir}", "name gt files like the inputs")
        gt, _ = read_image(gt_files[f.stem])
        if gt.shape != img.shape:
            raise DataError(f"ground truth {gt_files[f.stem].name} is {gt.shape[:2]}, input is {img.shape[:2]}")
        entry.update(input_psnr=psnr(img, gt), output_psnr=psnr(restored, gt),
                     input_ssim=ssim(img, gt), output_ssim=ssim(restored, gt))
    write_png(out / output_name(f), restored, bit_depth=16 if info.bit_depth == 16 else 8)
    return entry
