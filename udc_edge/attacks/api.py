"""One entry point per way of attacking: :func:`attack` and :func:`transfer_attack`.

Both take images as a float32 NCHW batch in [0, 1] (torch tensor or numpy array), check
every input once, run the attack named by the spec, then measure the result on the
target without counting those forward passes as queries.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from udc_edge.attacks.blackbox import check_batch, check_inputs, check_spec, craft_blackbox, measure
from udc_edge.attacks.cw import cw_l2
from udc_edge.attacks.result import AttackResult
from udc_edge.attacks.spec import AttackSpec
from udc_edge.attacks.targets import (
    check_target,
    is_torch_target,
    model_device,
    require_torch_target,
)
from udc_edge.attacks.whitebox import iterative_linf
from udc_edge.core.errors import UsageError

Batch = torch.Tensor | np.ndarray


def as_batch(arr: Any, name: str, unit_range: bool) -> torch.Tensor:
    """Check a batch (4-D, floating, finite, [0, 1] if asked) and return it as float32 torch."""
    return torch.from_numpy(check_batch(arr, name, unit_range))


def _inputs(x: Any, y: Any, spec: AttackSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    xa, ya = check_inputs(x, y, spec)
    return torch.from_numpy(xa), None if ya is None else torch.from_numpy(ya)


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
    x_adv, queries = craft_blackbox(target, x.numpy(), None if y is None else y.numpy(), spec)
    return torch.from_numpy(x_adv), queries, None


def _measure(
    target: Any, x_in: Any, x: torch.Tensor, y: torch.Tensor | None, x_adv: torch.Tensor,
    queries: np.ndarray, seconds: float, spec: AttackSpec, transfer: bool,
    success: np.ndarray | None,
) -> AttackResult:
    """Evaluate x and x_adv on the target (uncounted) and package the result; x_adv and
    the output come back as the kind of ``x_in`` (numpy, or a tensor on its device)."""
    res = measure(target, x.cpu().numpy(), None if y is None else y.cpu().numpy(),
                  x_adv.detach().float().cpu().numpy(), queries, seconds, spec, transfer, success)
    if isinstance(x_in, np.ndarray):
        return res
    return dataclasses.replace(res, x_adv=torch.from_numpy(res.x_adv).to(x_in.device),
                               output=torch.from_numpy(res.output).to(x_in.device))


def craft(target: Any, x: Batch, y: Batch | None = None, spec: AttackSpec | None = None) -> torch.Tensor:
    """Only the crafting half of :func:`attack`: the adversarial batch as a float32 tensor,
    without measuring the target at x and x_adv afterwards (for callers that measure
    their own way; through an EOT target those two passes cost 2 x its samples)."""
    spec = check_spec(spec)
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
    spec = check_spec(spec)
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
    spec = check_spec(spec)
    if not is_torch_target(surrogate):
        raise UsageError(f"the surrogate ({type(surrogate).__name__}) is not a torch nn.Module",
                         "craft on a differentiable torch model, e.g. the restorer before export")
    check_target(target)
    xt, yt = _inputs(x, y, spec)
    start = time.perf_counter()
    x_adv, queries, success = _craft(surrogate, xt, yt, spec)
    seconds = time.perf_counter() - start
    return _measure(target, x, xt, yt, x_adv, queries, seconds, spec, True, success)
