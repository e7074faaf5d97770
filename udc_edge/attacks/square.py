"""Square Attack, L-inf (Andriushchenko et al. 2020), maximising output distortion.

Start from vertical stripes of +-eps, then at every iteration replace one random square
window of each image's perturbation with a fresh +-eps per channel and keep it if the
objective rises. The window's area is a fraction p of the image, halved on the original
schedule (rescaled to the query budget). One query per image per iteration, plus the
start (and the clean output when ``objective="clean"``). Every candidate stays in [0, 1]
and in the eps ball. Runs on numpy arrays (forward passes only; no torch needed).
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
from udc_edge.core.errors import UsageError

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
             (6000, 128), (8000, 256), (10000, 512))
_RESAMPLE_TRIES = 100


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels a square covers at iteration ``it`` (the paper's schedule).

    The paper's bounds are for 10 000 iterations; like the reference code, ``it`` is
    rescaled to that length first.
    """
    it = int(it / max(n_iters, 1) * 10000)
    for bound, divisor in _SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init


def square_linf(
    qt: QueryTarget, x: np.ndarray, y: np.ndarray | None, spec: AttackSpec
) -> np.ndarray:
    """Run the L-inf Square Attack against the query target on a float32 NCHW batch;
    queries are counted on ``qt``."""
    check_ground_truth(spec.objective, y)
    n, c, h, w = x.shape
    if h < 2 or w < 2:
        raise UsageError(f"square attack needs images of at least 2x2 pixels, got {h}x{w}",
                         "use simba for such small inputs")
    eps = spec.linf_eps
    budget = spec.query_budget or 0  # never None: the spec refuses black-box without a budget
    rng = np.random.default_rng(spec.seed)
    ref = qt.query(x) if spec.objective == "clean" else require_ground_truth(y)
    stripes = rng.choice([-eps, eps], size=(n, c, 1, w)).astype(np.float32)
    x_best = project_linf(x + stripes, x, eps)
    best = per_image_mse(qt.query(x_best), ref)
    n_iters = budget - int(qt.queries.max())
    for i in range(max(n_iters, 0)):
        p = p_selection(spec.square_p_init, i, n_iters)
        s = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1)
        deltas = x_best - x
        for j in range(n):
            top = int(rng.integers(0, h - s + 1))
            left = int(rng.integers(0, w - s + 1))
            win = (j, slice(None), slice(top, top + s), slice(left, left + s))
            for _ in range(_RESAMPLE_TRIES):
                new = rng.choice([-eps, eps], size=(c, 1, 1)).astype(np.float32)
                if np.abs(np.clip(x[win] + new, 0.0, 1.0) - x_best[win]).max() >= 1e-7:
                    break
            deltas[win] = new
        cand = project_linf(x + deltas, x, eps)
        obj = per_image_mse(qt.query(cand), ref)
        gain = obj > best
        x_best[gain] = cand[gain]
        best[gain] = obj[gain]
    return x_best
