"""Adversarial attacks on image-to-image restorers and their deployed engines.

White-box (gradients of a torch model): ``pgd``, ``ifgsm``, ``mifgsm`` (L-inf) and ``cw``
(C&W-L2 adapted to regression). Black-box (forward passes of any target, including an
ONNX Runtime or TensorRT engine callable): ``simba`` and ``square``. Transfer: craft on
a torch surrogate, measure on the target. All maximise output distortion (MSE against
ground truth or against the clean output), keep x_adv in [0, 1] and in the L-inf
budget, and are deterministic for a seed::

    spec = AttackSpec("pgd", eps=parse_eps("8/255"), seed=0)
    result = attack(model, x, y, spec)
"""

from udc_edge.attacks.api import as_batch, attack, craft, transfer_attack
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
    "craft",
    "is_torch_target",
    "parse_attack_names",
    "parse_eps",
    "parse_eps_list",
    "per_image_mse",
    "psnr_from_mse",
    "transfer_attack",
]
