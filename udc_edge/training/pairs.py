"""Training pairs: synthesised on the fly (``synth:poled``) or cropped from a paired folder.

Synthetic pairs keep a pool of clean crops (built once; sources like dead leaves are slow
to draw) and re-degrade a random patch of one on every draw, so HDR boost, light sources
and sensor noise are new each time. Augmentation (flips) is applied to the clean image
before degradation, so the PSF's orientation stays physical.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from udc_edge.core.errors import DataError, UsageError
from udc_edge.core.progress import Advance, noop
from udc_edge.data.readers import PairedDataset, open_paired_dataset
from udc_edge.data.sources import make_source
from udc_edge.data.synth import UDCSimulator, image_rng, synth_pairs


def _to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())


def _flip(img: np.ndarray, code: int) -> np.ndarray:
    if code & 1:
        img = img[:, ::-1]
    if code & 2:
        img = img[::-1]
    return img


class SynthPairs:
    """Endless synthetic pairs for one display."""

    def __init__(self, display: str, patch: int, source: str = "mixed:train", pool: int = 192,
                 seed: int = 0, noise: bool = True, progress: Advance = noop):
        self.sim = UDCSimulator.for_display(display, noise=noise)
        if patch < self.sim.min_size:
            raise UsageError(
                f"--patch {patch} is too small for the display's PSF", f"use --patch >= {self.sim.min_size}"
            )
        self.patch = patch
        sample, self.source = make_source(source)
        crop = int(patch * 1.5)
        self.pool = []
        for i in range(pool):
            self.pool.append(sample(crop, image_rng(seed + 7919, i)))
            progress(1)

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        lqs, gts = [], []
        for _ in range(n):
            img = self.pool[int(rng.integers(len(self.pool)))]
            y, x = (int(rng.integers(0, img.shape[i] - self.patch + 1)) for i in (0, 1))
            clean = _flip(img[y : y + self.patch, x : x + self.patch], int(rng.integers(4)))
            lq, gt = self.sim.simulate(np.ascontiguousarray(clean), rng)
            lqs.append(lq)
            gts.append(gt)
        return _to_tensor(lqs), _to_tensor(gts)

    def describe(self) -> dict:
        return {"kind": "synthetic", "display": self.sim.layout.name, "source": self.source, "pool": len(self.pool)}


class FolderPairs:
    """Random crops (with flips) of a paired dataset's images, held in memory."""

    def __init__(self, ds: PairedDataset, indices: list[int], patch: int, progress: Advance = noop):
        if not ds.has_gt:
            raise DataError(f"dataset {ds.describe().get('root')} has no ground truth", "training needs lq/ and gt/")
        self.pairs = []
        for i in indices:
            p = ds[i]
            if min(p.lq.shape[:2]) < patch:
                raise DataError(f"image {p.name} ({p.lq.shape[0]}x{p.lq.shape[1]}) is smaller than --patch {patch}",
                                "use a smaller --patch")
            self.pairs.append((p.lq, p.gt))
            progress(1)
        self.patch = patch
        self.info = ds.describe()

    def batch(self, rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        lqs, gts = [], []
        for _ in range(n):
            lq, gt = self.pairs[int(rng.integers(len(self.pairs)))]
            y, x = (int(rng.integers(0, lq.shape[i] - self.patch + 1)) for i in (0, 1))
            code = int(rng.integers(4))
            lqs.append(_flip(lq[y : y + self.patch, x : x + self.patch], code))
            gts.append(_flip(gt[y : y + self.patch, x : x + self.patch], code))
        return _to_tensor(lqs), _to_tensor(gts)

    def describe(self) -> dict:
        return {"kind": "folder", **self.info, "train_pairs": len(self.pairs)}


class StepBatches(torch.utils.data.Dataset):
    """Item ``step`` is that step's ``(lq, gt, rng)``, drawn with ``default_rng([seed, step, rank])``.

    ``rng`` is returned positioned after the batch, so a trainer draws its noise seeds from it
    exactly as it would in-process: the batches do not depend on how many workers made them.
    """

    def __init__(self, sampler: SynthPairs | FolderPairs, seed: int, rank: int, n: int):
        self.sampler, self.seed, self.rank, self.n = sampler, seed, rank, n

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, np.random.Generator]:
        rng = np.random.default_rng([self.seed, step, self.rank])
        lq, gt = self.sampler.batch(rng, self.n)
        return lq, gt, rng


def step_batches(
    sampler: SynthPairs | FolderPairs, seed: int, rank: int, n: int, steps: range, workers: int = 0, pin: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor, np.random.Generator]]:
    """The batches of ``steps`` in order: in this process, or made ahead by ``workers`` processes.

    Synthesising a batch (PSF, HDR, sensor noise per crop) costs about 1.6 ms per 64 px crop on
    one CPU core: on a GPU it, not the UNet, bounds the step rate unless workers make batches.
    """
    ds = StepBatches(sampler, seed, rank, n)
    if workers <= 0:
        return (ds[s] for s in steps)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=steps, num_workers=workers,
                                         pin_memory=pin, prefetch_factor=4)
    return iter(loader)


@dataclass
class TrainData:
    """What a training run draws from, and its fixed validation pairs (HWC float32)."""

    sampler: SynthPairs | FolderPairs
    val: list[tuple[np.ndarray, np.ndarray]]

    def describe(self) -> dict:
        return {**self.sampler.describe(), "val_pairs": len(self.val)}


def make_train_data(data: str | os.PathLike, patch: int, seed: int, val_count: int = 8,
                    val_size: int = 128, pool: int = 192, progress: Advance = noop) -> TrainData:
    """``synth:poled`` / ``synth:toled`` / ``synth:LAYOUT.json`` or a paired dataset path.

    Synthetic validation pairs are made from the *training* photos with another seed; the
    ``photos:test`` split stays unseen for the held-out evaluation in model cards.
    """
    key = str(data)
    if key.startswith("synth:"):
        display = key.split(":", 1)[1]
        sampler = SynthPairs(display, patch, pool=pool, seed=seed, progress=progress)
        return TrainData(sampler, synth_pairs(display, "photos:train", val_count, max(val_size, patch), seed + 100_003))
    ds = open_paired_dataset(Path(key))
    n = len(ds)
    if n < 2:
        raise DataError(f"dataset {key} has {n} pair(s)", "training needs at least 2 (one is held out for validation)")
    n_val = max(1, min(val_count, n // 10))
    val_idx = list(range(n - n_val, n))
    sampler = FolderPairs(ds, list(range(n - n_val)), patch, progress=progress)
    val = [(p.lq, p.gt) for p in map(ds.__getitem__, val_idx)]  # each pair read once
    return TrainData(sampler, val)
