"""SimBA (Guo et al. 2019), a forward-only attack, for image-to-image targets.

Directions are tried one at a time in a random order that starts at low spatial
frequencies (DCT basis; ``simba_basis="pixel"`` uses single pixels): x + step*d is queried
first and kept if the objective rises, otherwise x - step*d. Every candidate is clipped to
[0, 1] and, when eps is given, to the L-inf ball around x.

Adaptation: a DCT direction is a 2-D cosine in one channel scaled to a peak of 1, so
``simba_step`` (default 4/256) is the largest change of any pixel, in the same units as
eps (the original scales directions to unit L2 norm). Candidates that the projection
maps back onto the current image are skipped without spending a query. Runs on numpy
arrays: it only needs forward passes, so a device without torch can attack its engine.
"""

from __future__ import annotations

import math

import numpy as np

from udc_edge.attacks.objectives import (
    check_ground_truth,
    per_image_mse,
    project_linf,
    require_ground_truth,
)
from udc_edge.attacks.spec import AttackSpec
from udc_edge.attacks.targets import QueryTarget


def direction_order(
    shape: tuple[int, int, int], basis: str, freq_dims: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Flat (channel, row, col) indices in the order SimBA tries them.

    DCT: the ``freq_dims`` x ``freq_dims`` lowest frequencies of every channel first (in
    random order), then rings of growing frequency, each shuffled. Pixel: a permutation.
    """
    c, h, w = shape
    key = rng.permutation(c * h * w)
    if basis == "pixel":
        return key
    fd = freq_dims if freq_dims is not None else max(1, min(h, w) // 8)
    stride = max(1, fd // 4)
    u, v = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    ring = np.maximum(u, v)
    band = np.where(ring < fd, 0, 1 + (ring - fd) // stride)
    band = np.broadcast_to(band, (c, h, w)).ravel()
    return np.lexsort((key, band))


class _Directions:
    """Builds the image-shaped direction for a flat index, with a peak magnitude of 1."""

    def __init__(self, shape: tuple[int, int, int], basis: str):
        self.shape, self.basis = shape, basis
        _, h, w = shape
        self.cos_h = self._cosines(h)
        self.cos_w = self._cosines(w)

    def _cosines(self, n: int) -> np.ndarray:
        freq = np.arange(n, dtype=np.float64).reshape(-1, 1)
        pos = np.arange(n, dtype=np.float64).reshape(1, -1)
        return np.cos(math.pi * (2 * pos + 1) * freq / (2 * n))

    def __call__(self, flat: int) -> np.ndarray:
        _, h, w = self.shape
        ch, rest = divmod(int(flat), h * w)
        row, col = divmod(rest, w)
        d = np.zeros(self.shape, dtype=np.float64)
        if self.basis == "pixel":
            d[ch, row, col] = 1.0
        else:
            plane = np.outer(self.cos_h[row], self.cos_w[col])
            d[ch] = plane / np.abs(plane).max()
        return d.astype(np.float32)


def simba(
    qt: QueryTarget, x: np.ndarray, y: np.ndarray | None, spec: AttackSpec
) -> np.ndarray:
    """Run SimBA against the query target on a float32 NCHW batch; queries are counted on ``qt``."""
    check_ground_truth(spec.objective, y)
    budget = spec.query_budget
    rng = np.random.default_rng(spec.seed)
    shape = tuple(x.shape[1:])
    out0 = qt.query(x)
    ref = out0 if spec.objective == "clean" else require_ground_truth(y)
    best = per_image_mse(out0, ref)
    x_adv = x.copy()
    order = direction_order(shape, spec.simba_basis, spec.simba_freq_dims, rng)
    limit = len(order) if spec.simba_iterations is None else min(len(order), spec.simba_iterations)
    directions = _Directions(shape, spec.simba_basis)
    step = float(spec.simba_step)
    for k in range(limit):
        active = qt.queries < budget
        if not active.any():
            break
        d = directions(order[k])
        for sign in (1.0, -1.0):
            idx = np.flatnonzero(active & (qt.queries < budget))
            if idx.size == 0:
                break
            cand = project_linf(x_adv[idx] + sign * step * d, x[idx], spec.eps)
            moved = (cand != x_adv[idx]).reshape(idx.size, -1).any(axis=1)
            if not moved.any():
                continue
            idx, cand = idx[moved], cand[moved]
            obj = per_image_mse(qt.query(cand, idx), ref[idx])
            gain = obj > best[idx]
            if gain.any():
                x_adv[idx[gain]] = cand[gain]
                best[idx[gain]] = obj[gain]
                active[idx[gain]] = False
    return x_adv
