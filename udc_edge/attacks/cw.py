"""Carlini & Wagner L2, adapted from classification to image-to-image regression.

The original attack minimises ``||delta||^2 + c * f(x + delta)`` where ``f <= 0`` exactly
when the class margin is won (by ``confidence``). A restorer has no class, so:

* **success** means the per-image objective D (output MSE vs ground truth or vs the clean
  output) rises by ``cw_target`` over its clean value D0: ``D >= D0 + cw_target +
  cw_confidence`` (with ``objective="clean"`` D0 = 0, so the default 0.01 is an output
  PSNR of 20 dB against the clean output). Relative to D0, so a model whose clean output
  is already poor does not "succeed" with a zero perturbation;
* the margin becomes ``f = max(D0 + cw_target - D, -cw_confidence)``: the attack pushes
  the distortion up until the target is met and then only shrinks delta, which is what
  makes it find small-L2 perturbations (an unbounded ``-c * D`` would keep growing delta);
* the distance term is the *mean* of delta^2 over the C*H*W elements (D is a mean too), so
  the constant c does not depend on the resolution; reported L2 norms are plain
  ``||delta||_2`` over all elements.

The rest is the original: x = (tanh(w) + 1) / 2 keeps every iterate in [0, 1], Adam on
w, ``cw_search_steps`` rounds of binary search on a per-image c (x10 until the first
success, then bisection), early abort when the loss stalls. With ``objective="clean"``
the gradient at x is zero, so Adam starts from x plus uniform noise of 0.01/255. Per image the result is the
successful iterate with the smallest L2; an image that never succeeds gets the iterate
with the largest objective (and ``success=False``), not the clean input.
"""

from __future__ import annotations

import torch
from torch import nn

from udc_edge.attacks.objectives import per_image_mse
from udc_edge.attacks.spec import AttackSpec
from udc_edge.attacks.targets import eval_mode
from udc_edge.attacks.whitebox import JITTER_FRACTION, clean_jitter, whitebox_reference

_TANH_SHRINK = 1.0 - 1e-6  # keeps atanh finite for pixels at exactly 0 or 1
_STALL = 0.9999


def _to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    return torch.atanh((2.0 * x - 1.0) * _TANH_SHRINK)


def _from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(w) + 1.0) / 2.0


class _Best:
    """Per-image record of the best adversarial seen so far (see module docstring)."""

    def __init__(self, x: torch.Tensor):
        n = x.shape[0]
        self.x_adv = x.clone()
        self.l2 = torch.full((n,), float("inf"), device=x.device)
        self.obj = torch.full((n,), float("-inf"), device=x.device)
        self.success = torch.zeros(n, dtype=torch.bool, device=x.device)

    def update(self, x_new: torch.Tensor, l2: torch.Tensor, obj: torch.Tensor, ok: torch.Tensor):
        smaller = ok & (~self.success | (l2 < self.l2))
        stronger = ~self.success & ~ok & (obj > self.obj)
        take = smaller | stronger
        self.x_adv[take] = x_new[take]
        self.l2[take] = l2[take]
        self.obj[take] = obj[take]
        self.success |= ok


def cw_l2(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, spec: AttackSpec
) -> tuple[torch.Tensor, int, torch.Tensor]:
    """Run C&W-L2; return x_adv, the model passes per image, and the per-image success."""
    n = x.shape[0]
    dev = x.device
    gen = torch.Generator().manual_seed(spec.seed)
    lower = torch.zeros(n, device=dev)
    upper = torch.full((n,), float("inf"), device=dev)
    const = torch.full((n,), float(spec.cw_initial_const), device=dev)
    best = _Best(x)
    with eval_mode(model):
        ref, passes = whitebox_reference(model, x, y, spec.objective)
        if spec.objective == "clean":
            floor = torch.zeros(n, device=dev)
        else:
            with torch.no_grad():
                floor = per_image_mse(model(x), ref)
            passes += 1
        needed = floor + spec.cw_target  # the margin reaches -confidence at needed + confidence
        # the 'clean' objective has zero gradient at x: start from a tiny jitter instead
        start = clean_jitter(x, JITTER_FRACTION / 255, gen) if spec.objective == "clean" else x
        w0 = _to_tanh_space(start)
        abort_every = max(1, spec.cw_max_iter // 10)
        for _ in range(spec.cw_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=spec.cw_lr)
            hit = torch.zeros(n, dtype=torch.bool, device=dev)
            prev = float("inf")
            for it in range(spec.cw_max_iter):
                with torch.enable_grad():
                    x_new = _from_tanh_space(w)
                    obj = per_image_mse(model(x_new), ref)
                    dist = (x_new - x).pow(2).flatten(1).mean(dim=1)
                    margin = torch.clamp(needed - obj, min=-spec.cw_confidence)
                    total = (dist + const * margin).sum()
                    (grad,) = torch.autograd.grad(total, w)
                passes += 1
                with torch.no_grad():
                    ok = obj.detach() >= needed + spec.cw_confidence
                    hit |= ok
                    l2 = (x_new.detach() - x).flatten(1).norm(dim=1)
                    best.update(x_new.detach(), l2, obj.detach(), ok)
                w.grad = grad
                opt.step()
                if it % abort_every == 0:
                    if total.item() > prev * _STALL:
                        break
                    prev = total.item()
            upper = torch.where(hit, torch.minimum(upper, const), upper)
            lower = torch.where(hit, lower, torch.maximum(lower, const))
            const = torch.where(torch.isinf(upper), const * 10.0, (lower + upper) / 2.0)
    return best.x_adv.clamp(0.0, 1.0), passes, best.success
