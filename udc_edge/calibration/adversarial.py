"""Robustness-aware calibration: adversarial inputs in the calibration set and in the
fidelity checks of ``build``.

``--calib-adversarial pgd:8/255`` crafts, for every calibration image, an attacked copy
on the FP32 model (a differentiable replica of the float ONNX, so no PyTorch checkpoint
is needed) and calibrates on both: attacked inputs push activations to values clean
inputs never reach, and ranges fitted to clean images alone clip them (saturation is
where INT8 engines lose robustness). The attacks maximise the output change against the
clean output (``objective="clean"``): calibration images have no ground truth.
"""

from __future__ import annotations

import numpy as np

from udc_edge.attacks import AttackSpec, attack
from udc_edge.attacks.spec import parse_eps
from udc_edge.core.errors import UsageError

#: L-inf attacks ``--calib-adversarial`` accepts.
CALIB_ATTACKS = ("pgd", "ifgsm", "mifgsm")


def parse_calib_adversarial(text: str, seed: int = 0) -> AttackSpec:
    """``NAME:EPS[:STEPS]`` (e.g. ``pgd:8/255`` or ``pgd:4/255:10``) -> an AttackSpec."""
    parts = str(text).strip().split(":")
    if len(parts) not in (2, 3) or parts[0].lower() not in CALIB_ATTACKS:
        raise UsageError(f"--calib-adversarial {text!r} is not ATTACK:EPS[:STEPS] with ATTACK one of "
                         f"{', '.join(CALIB_ATTACKS)}", "e.g. --calib-adversarial pgd:8/255")
    try:
        eps = parse_eps(parts[1])
    except UsageError as exc:
        raise UsageError(f"--calib-adversarial {text!r}: {exc.message}", exc.hint) from exc
    steps = 20
    if len(parts) == 3:
        if not parts[2].isdigit() or int(parts[2]) < 1:
            raise UsageError(f"--calib-adversarial {text!r}: steps {parts[2]!r} must be an integer >= 1",
                             "e.g. pgd:8/255:10")
        steps = int(parts[2])
    return AttackSpec(parts[0].lower(), eps=eps, steps=steps, objective="clean", seed=seed)


def craft(model, images: np.ndarray, spec: AttackSpec) -> np.ndarray:
    """Attacked copies of ``images`` (N x 3 x H x W) crafted white-box on ``model`` (a torch
    module taking N x 3 x H x W), one image at a time (seeded per image)."""
    out = []
    for i, img in enumerate(images):
        s = AttackSpec(spec.name, eps=spec.eps, steps=spec.steps, objective="clean", seed=spec.seed + i)
        res = attack(model, np.ascontiguousarray(img[None]), None, s)  # numpy in, numpy out
        out.append(np.asarray(res.x_adv, dtype=np.float32)[0])
    return np.stack(out)
