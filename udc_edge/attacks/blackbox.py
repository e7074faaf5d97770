"""Black-box attacks (SimBA, Square) end to end on numpy arrays: no torch needed.

What a device with only its engine can run: :func:`blackbox_attack` checks the batch,
crafts with forward passes only, and measures the result (:func:`measure`, also used
for white-box results by ``attacks.api``). :func:`forward` is one image through any
target, uncounted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from udc_edge.attacks.objectives import check_ground_truth, per_image_mse, require_ground_truth
from udc_edge.attacks.result import AttackResult
from udc_edge.attacks.simba import simba
from udc_edge.attacks.spec import AttackSpec
from udc_edge.attacks.square import square_linf
from udc_edge.attacks.targets import QueryTarget, check_target
from udc_edge.core.errors import UsageError
from udc_edge.data.images import nchw_array, to_hwc


def to_array(arr: Any, name: str) -> np.ndarray:
    """A numpy view of a numpy array or a (detached, CPU, float32 if floating) torch tensor."""
    if isinstance(arr, np.ndarray):
        return arr
    if hasattr(arr, "detach") and hasattr(arr, "is_floating_point"):
        t = arr.detach()
        return (t.float() if t.is_floating_point() else t).cpu().numpy()
    raise UsageError(f"{name} must be a torch tensor or numpy array, got {type(arr).__name__}",
                     "pass a float32 NCHW batch in [0, 1]")


def check_batch(arr: Any, name: str, unit_range: bool) -> np.ndarray:
    """Check a batch (4-D, floating, finite, [0, 1] if asked); return it as float32 numpy."""
    a = to_array(arr, name)
    if a.ndim != 4 or a.shape[0] == 0:
        raise UsageError(f"{name} has shape {tuple(a.shape)}, not a non-empty NCHW batch",
                         "add a batch axis (x[None]) and put channels first")
    if not np.issubdtype(a.dtype, np.floating):
        raise UsageError(f"{name} has dtype {a.dtype}, not floating point",
                         "convert 8-bit images with x.astype(np.float32) / 255")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise UsageError(f"{name} contains NaN or infinite values", "check how it was produced")
    if unit_range and (a.min() < 0 or a.max() > 1):
        raise UsageError(
            f"{name} has values in [{a.min():.4g}, {a.max():.4g}], outside [0, 1]",
            "attacks work on images scaled to [0, 1]; divide 8-bit data by 255",
        )
    return a


def check_inputs(x: Any, y: Any, spec: AttackSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (in [0, 1]) and ground truth ``y`` checked, as float32 numpy."""
    xa = check_batch(x, "x", unit_range=True)
    ya = None if y is None else check_batch(y, "y", unit_range=False)
    if ya is not None and ya.shape[0] != xa.shape[0]:
        raise UsageError(f"x holds {xa.shape[0]} images but y holds {ya.shape[0]}",
                         "give one ground-truth image per input")
    check_ground_truth(spec.objective, ya)
    return xa, ya


def craft_blackbox(target: Any, x: np.ndarray, y: np.ndarray | None, spec: AttackSpec
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Run SimBA or Square on checked arrays; return x_adv and the per-image queries."""
    if spec.is_whitebox:
        raise UsageError(f"{spec.name} is a white-box attack", "use udc_edge.attacks.attack for it")
    qt = QueryTarget(target, x.shape[0])
    run = simba if spec.name == "simba" else square_linf
    return run(qt, x, y, spec), qt.queries.copy()


def measure(target: Any, x: np.ndarray, y: np.ndarray | None, x_adv: np.ndarray, queries: np.ndarray,
            seconds: float, spec: AttackSpec, transfer: bool, success: np.ndarray | None) -> AttackResult:
    """Evaluate x and x_adv on the target (uncounted) and package the result (numpy arrays)."""
    viewer = QueryTarget(target, x.shape[0])
    out_clean, out_adv = viewer.peek(x), viewer.peek(x_adv)
    ref = out_clean if spec.objective == "clean" else require_ground_truth(y)
    delta = (x_adv - x).reshape(x.shape[0], -1)
    return AttackResult(
        x_adv=x_adv, queries=queries, linf=np.abs(delta).max(axis=1), l2=np.linalg.norm(delta, axis=1),
        objective=per_image_mse(out_adv, ref), objective_clean=per_image_mse(out_clean, ref),
        seconds=seconds, spec=spec, transfer=transfer, success=success, output=out_adv)


def check_spec(spec: Any) -> AttackSpec:
    """Refuse anything but an :class:`AttackSpec`."""
    if not isinstance(spec, AttackSpec):
        raise UsageError(f"spec must be an AttackSpec, got {type(spec).__name__}",
                         "build one, e.g. AttackSpec('pgd', eps=parse_eps('8/255'))")
    return spec


def blackbox_attack(target: Any, x: Any, y: Any = None, spec: AttackSpec | None = None) -> AttackResult:
    """SimBA or Square on ``target`` (an engine callable or a torch module); arrays in and out."""
    spec = check_spec(spec)
    check_target(target)
    xa, ya = check_inputs(x, y, spec)
    start = time.perf_counter()
    x_adv, queries = craft_blackbox(target, xa, ya, spec)
    return measure(target, xa, ya, x_adv, queries, time.perf_counter() - start, spec, False, None)


def output_image(out: Any) -> np.ndarray:
    """A target's NCHW output (e.g. :attr:`AttackResult.output`) as an HxWx3 image in [0, 1]."""
    return np.clip(to_hwc(out), 0.0, 1.0)


def forward(target: Any, img: np.ndarray) -> np.ndarray:
    """The target's output for one HxWx3 image, clipped to [0, 1] (not counted as a query)."""
    return output_image(QueryTarget(target, 1).peek(nchw_array(img)))
