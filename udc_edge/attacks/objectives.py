"""Objectives for attacks on image-to-image models: output distortion, not a class margin.

An attack maximises the sum over the batch of the per-image mean squared error between
the model output and a reference: the ground truth (``objective="gt"``) or the output of
the clean input f(x) (``objective="clean"``, which needs no ground truth). Per-image
values are what reports use; the batch sum is what gradients follow. Everything here works
on numpy arrays (black-box attacks, engines, no torch needed) and torch tensors alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from udc_edge.core.errors import UsageError


def per_image_mse(out: Any, ref: Any) -> Any:
    """Mean squared error of each image in a batch, shape ``(N,)`` (numpy or torch, as given)."""
    if out.shape != ref.shape:
        raise UsageError(
            f"the model output has shape {tuple(out.shape)} but its reference has "
            f"{tuple(ref.shape)}",
            "give ground truth of the output's size, or use objective='clean'",
        )
    return ((out - ref) ** 2).reshape(out.shape[0], -1).mean(1)


def project_linf(x_adv: Any, x: Any, eps: float | None) -> Any:
    """Project onto the L-inf ball of radius eps around x (if eps is given) and onto [0, 1]."""
    if eps is not None:
        x_adv = x_adv.clip(x - eps, x + eps)
    return x_adv.clip(0.0, 1.0)


def require_ground_truth(y: Any) -> Any:
    """Return the ground truth ``y``; refuse a missing one, naming both ways out."""
    if y is None:
        raise UsageError(
            "objective 'gt' needs ground truth y, and none was given",
            "pass y, or use objective='clean' to attack the distance to the clean output",
        )
    return y


def check_ground_truth(objective: str, y: Any) -> None:
    """Refuse ``objective="gt"`` without ground truth before any work is done."""
    if objective == "gt":
        require_ground_truth(y)


def psnr_from_mse(mse: np.ndarray | float, peak: float = 1.0) -> np.ndarray:
    """PSNR in dB for an MSE on [0, peak] images (inf where the MSE is 0)."""
    mse = np.asarray(mse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(peak**2 / mse)
