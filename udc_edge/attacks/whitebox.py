"""Iterative L-inf gradient attacks: PGD, I-FGSM (BIM) and MI-FGSM.

One loop serves all three: PGD starts uniformly in the eps ball and steps eps/4 along the
gradient sign; I-FGSM starts at x and steps eps/steps; MI-FGSM adds momentum on the
L1-normalised gradient (Dong et al. 2018). After every step x_adv is projected onto the
eps ball around x and clipped to [0, 1]. Gradients are taken with respect to the input
only (``torch.autograd.grad``), so the model's parameters never receive ``.grad``.

With ``objective="clean"`` the gradient at x itself is exactly zero (the output equals
its reference), so an attack without a random start begins from x plus a tiny uniform
jitter of eps/100 instead of x; see :func:`clean_jitter`.
"""

from __future__ import annotations

import torch
from torch import nn

from udc_edge.attacks.objectives import per_image_mse, project_linf, require_ground_truth
from udc_edge.attacks.spec import AttackSpec
from udc_edge.attacks.targets import eval_mode

JITTER_FRACTION = 0.01


def uniform_like(x: torch.Tensor, radius: float, gen: torch.Generator) -> torch.Tensor:
    """Uniform noise in [-radius, radius] drawn on the CPU from ``gen``, moved to x's device."""
    noise = torch.rand(x.shape, generator=gen, dtype=torch.float32) * 2.0 - 1.0
    return (noise * radius).to(x.device)


def clean_jitter(x: torch.Tensor, radius: float, gen: torch.Generator) -> torch.Tensor:
    """x plus tiny noise, so the 'clean' objective (zero gradient at x) has a direction."""
    return (x + uniform_like(x, radius, gen)).clamp(0.0, 1.0)


def whitebox_reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, objective: str
) -> tuple[torch.Tensor, int]:
    """The objective's reference (y, or f(x) at the cost of one pass) and the passes spent."""
    if objective == "clean":
        with torch.no_grad():
            return model(x).detach(), 1
    return require_ground_truth(y), 0


def input_gradient(
    model: nn.Module, x_adv: torch.Tensor, ref: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the batch-summed objective w.r.t. the input, and the per-image objective."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        obj = per_image_mse(model(x_adv), ref)
        (grad,) = torch.autograd.grad(obj.sum(), x_adv)
    return grad, obj.detach()


def iterative_linf(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, spec: AttackSpec
) -> tuple[torch.Tensor, int]:
    """Run PGD / I-FGSM / MI-FGSM; return x_adv and the model passes spent per image."""
    eps = spec.linf_eps
    alpha = spec.step
    use_momentum = spec.name == "mifgsm"
    gen = torch.Generator().manual_seed(spec.seed)
    with eval_mode(model):
        ref, passes = whitebox_reference(model, x, y, spec.objective)
        if spec.uses_random_start:
            x_adv = project_linf(x + uniform_like(x, eps, gen), x, eps)
        elif spec.objective == "clean":
            x_adv = project_linf(clean_jitter(x, eps * JITTER_FRACTION, gen), x, eps)
        else:
            x_adv = x.clone()
        velocity = torch.zeros_like(x)
        for _ in range(spec.steps):
            grad, _obj = input_gradient(model, x_adv, ref)
            passes += 1
            if use_momentum:
                l1 = grad.abs().flatten(1).sum(dim=1).clamp_min(1e-12)
                velocity = spec.momentum * velocity + grad / l1.view(-1, 1, 1, 1)
                direction = velocity.sign()
            else:
                direction = grad.sign()
            x_adv = project_linf(x_adv + alpha * direction, x, eps)
    return x_adv.detach(), passes
