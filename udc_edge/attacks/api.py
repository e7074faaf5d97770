"""One entry point per way of attacking: :func:`attack` and :func:`transfer_attack`.

Both take images as a float32 NCHW batch in [0, 1] (torch tensor or numpy array), check
every input once, run the attack named by the spec, then measure the result on the
target without counting those forward passes as queries.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from udc_edge.attacks.cw import cw_l2
from udc_edge.attacks.objectives import check_ground_truth, per_image_mse, require_ground_truth
from udc_edge.attacks.result import AttackResult
from udc_edge.attacks.simba import simba
from udc_edge.attacks.spec import AttackSpec
from udc_edge.attacks.square import square_linf
from udc_edge.attacks.targets import (
    QueryTarget,
    check_target,
    is_torch_target,
    model_device,
    require_torch_target,
)
from udc_edge.attacks.whitebox import iterative_linf
from udc_edge.core.errors import UsageError

Batch = torch.Tensor | np.ndarray


def _check_spec(spec: Any) -> AttackSpec:
    if not isinstance(spec, AttackSpec):
        raise UsageError(f"spec must be an AttackSpec, got {type(spec).__name__}",
                         "build one, e.g. AttackSpec('pgd', eps=parse_eps('8/255'))")
    return spec


def as_batch(arr: Any, name: str, unit_range: bool) -> torch.Tensor:
    """Check a batch (4-D, floating, finite, [0, 1] if asked) and return it as float32 torch."""
    if isinstance(arr, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(arr))
    elif isinstance(arr, torch.Tensor):
        tensor = arr.detach()
    else:
        raise UsageError(f"{name} must be a torch tensor or numpy array, got {type(arr).__name__}",
                         "pass a float32 NCHW batch in [0, 1]")
    if tensor.ndim != 4 or tensor.shape[0] == 0:
        raise UsageError(f"{name} has shape {tuple(tensor.shape)}, not a non-empty NCHW batch",
                         "add a batch axis (x[None]) and put channels first")
    if not tensor.is_floating_point():
        raise UsageError(f"{name} has dtype {tensor.dtype}, not floating point",
                         "convert 8-bit images with x.astype(np.float32) / 255")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise UsageError(f"{name} contains NaN or infinite values", "check how it was produced")
    if unit_range and (tensor.min() < 0 or tensor.max() > 1):
        raise UsageError(
            f"{name} has values in [{tensor.min().item():.4g}, {tensor.max().item():.4g}], "
            "outside [0, 1]",
            "attacks work on images scaled to [0, 1]; divide 8-bit data by 255",
        )
    return tensor


def _inputs(x: Any, y: Any, spec: AttackSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    xt = as_batch(x, "x", unit_range=True)
    yt = None if y is None else as_batch(y, "y", unit_range=False)
    if yt is not None and yt.shape[0] != xt.shape[0]:
        raise UsageError(f"x holds {xt.shape[0]} images but y holds {yt.shape[0]}",
                         "give one ground-truth image per input")
    check_ground_truth(spec.objective, yt)
    return xt, yt


def _craft(
    target: Any, x: torch.Tensor, y: torch.Tensor | None, spec: AttackSpec
) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    """Run the attack on ``target``; return x_adv, per-image queries and C&W success."""
    n = x.shape[0]
    if spec.is_whitebox:
        model = require_torch_target(target, spec.name)
        dev = model_device(model)
        x, y = x.to(dev), None if y is None else y.to(dev)
        if spec.name == "cw":
            x_adv, passes, success = cw_l2(model, x, y, spec)
            return x_adv, np.full(n, passes, dtype=np.int64), success.cpu().numpy()
        x_adv, passes = iterative_linf(model, x, y, spec)
        return x_adv, np.full(n, passes, dtype=np.int64), None
    qt = QueryTarget(target, n)
    x, y = x.to(qt.device), None if y is None else y.to(qt.device)
    run = simba if spec.name == "simba" else square_linf
    x_adv = run(qt, x, y, spec)
    return x_adv, qt.queries.copy(), None


def _measure(
    target: Any, x_in: Any, x: torch.Tensor, y: torch.Tensor | None, x_adv: torch.Tensor,
    queries: np.ndarray, seconds: float, spec: AttackSpec, transfer: bool,
    success: np.ndarray | None,
) -> AttackResult:
    """Evaluate x and x_adv on the target (uncounted) and package the result."""
    viewer = QueryTarget(target, x.shape[0])
    x_adv = x_adv.detach().to(viewer.device)
    x = x.to(viewer.device)
    out_clean, out_adv = viewer.peek(x), viewer.peek(x_adv)
    ref = out_clean if spec.objective == "clean" else require_ground_truth(y).to(viewer.device)
    objective = per_image_mse(out_adv, ref)
    objective_clean = per_image_mse(out_clean, ref)
    delta = (x_adv - x).flatten(1)
    if isinstance(x_in, np.ndarray):
        x_out: Batch = x_adv.cpu().numpy().astype(np.float32, copy=False)
        output: Batch = out_adv.detach().cpu().numpy().astype(np.float32, copy=False)
    else:
        x_out, output = x_adv.to(x_in.device), out_adv.detach().to(x_in.device)
    return AttackResult(
        x_adv=x_out,
        queries=queries,
        linf=delta.abs().amax(dim=1).cpu().numpy(),
        l2=delta.norm(dim=1).cpu().numpy(),
        objective=objective.cpu().numpy(),
        objective_clean=objective_clean.cpu().numpy(),
        seconds=seconds,
        spec=spec,
        transfer=transfer,
        success=success,
        output=output,
    )


def craft(target: Any, x: Batch, y: Batch | None = None, spec: AttackSpec | None = None) -> torch.Tensor:
    """Only the crafting half of :func:`attack`: the adversarial batch as a float32 tensor,
    without measuring the target at x and x_adv afterwards (for callers that measure
    their own way; through an EOT target those two passes cost 2 x its samples)."""
    spec = _check_spec(spec)
    check_target(target)
    xt, yt = _inputs(x, y, spec)
    return _craft(target, xt, yt, spec)[0].detach()


def attack(target: Any, x: Batch, y: Batch | None = None, spec: AttackSpec | None = None
           ) -> AttackResult:
    """Attack ``target`` (torch module, or numpy engine callable for black-box attacks).

    ``x`` (and ground truth ``y``, needed for ``objective="gt"``) is a float32 NCHW batch
    in [0, 1]. White-box attacks on an engine raise :class:`UsageError` pointing to
    :func:`transfer_attack` and the black-box attacks.
    """
    spec = _check_spec(spec)
    check_target(target)
    xt, yt = _inputs(x, y, spec)
    start = time.perf_counter()
    x_adv, queries, success = _craft(target, xt, yt, spec)
    seconds = time.perf_counter() - start
    return _measure(target, x, xt, yt, x_adv, queries, seconds, spec, False, success)


def transfer_attack(
    surrogate: nn.Module, target: Any, x: Batch, y: Batch | None = None,
    spec: AttackSpec | None = None,
) -> AttackResult:
    """Craft on a torch ``surrogate`` with any attack, then measure the result on ``target``.

    The target (another model or an engine) is never queried while crafting; the
    result's ``queries`` are those spent on the surrogate.
    """
    spec = _check_spec(spec)
    if not is_torch_target(surrogate):
        raise UsageError(f"the surrogate ({type(surrogate).__name__}) is not a torch nn.Module",
                         "craft on a differentiable torch model, e.g. the restorer before export")
    check_target(target)
    xt, yt = _inputs(x, y, spec)
    start = time.perf_counter()
    x_adv, queries, success = _craft(surrogate, xt, yt, spec)
    seconds = time.perf_counter() - start
    return _measure(target, x, xt, yt, x_adv, queries, seconds, spec, True, success)
