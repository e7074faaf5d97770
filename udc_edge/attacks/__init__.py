"""Adversarial attacks on image-to-image restorers and their deployed engines.

White-box (gradients of a torch model): ``pgd``, ``ifgsm``, ``mifgsm`` (L-inf) and ``cw``
(C&W-L2 adapted to regression). Black-box (forward passes of any target, including an
ONNX Runtime or TensorRT engine callable): ``simba`` and ``square``. Transfer: craft on
a torch surrogate, measure on the target. All maximise output distortion (MSE against
ground truth or against the clean output), keep x_adv in [0, 1] and in the L-inf
budget, and are deterministic for a seed::

    spec = AttackSpec("pgd", eps=parse_eps("8/255"), seed=0)
    result = attack(model, x, y, spec)

Importing this package needs no torch: the entry points of ``attacks.api`` (``attack``,
``craft``, ``transfer_attack``, ``as_batch``) load on first use, and black-box attacks on
an engine run through ``attacks.blackbox`` on numpy alone.
"""

from typing import Any

from udc_edge.attacks.blackbox import blackbox_attack
from udc_edge.attacks.objectives import per_image_mse, psnr_from_mse
from udc_edge.attacks.result import AttackResult
from udc_edge.attacks.spec import (
    ATTACK_NAMES,
    BLACKBOX_ATTACKS,
    EPS_REQUIRED,
    LINF_ATTACKS,
    OBJECTIVES,
    WHITEBOX_ATTACKS,
    AttackSpec,
    parse_attack_names,
    parse_eps,
    parse_eps_list,
)
from udc_edge.attacks.targets import QueryTarget, is_torch_target

_API = ("as_batch", "attack", "craft", "transfer_attack")


def __getattr__(name: str) -> Any:
    """The torch-backed entry points of ``attacks.api``, imported when first asked for."""
    if name in _API:
        from udc_edge.attacks import api

        return getattr(api, name)
    raise AttributeError(f"module 'udc_edge.attacks' has no attribute {name!r}")


__all__ = [
    "ATTACK_NAMES",
    "BLACKBOX_ATTACKS",
    "EPS_REQUIRED",
    "LINF_ATTACKS",
    "OBJECTIVES",
    "WHITEBOX_ATTACKS",
    "AttackResult",
    "AttackSpec",
    "QueryTarget",
    "as_batch",
    "attack",
    "blackbox_attack",
    "craft",
    "is_torch_target",
    "parse_attack_names",
    "parse_eps",
    "parse_eps_list",
    "per_image_mse",
    "psnr_from_mse",
    "transfer_attack",
]
