"""What an attack returns: the adversarial batch and per-image measurements."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from udc_edge.attacks.objectives import psnr_from_mse
from udc_edge.attacks.spec import AttackSpec

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)
class AttackResult:
    """The outcome of one attack on one batch; per-image arrays have shape ``(N,)``.

    ``x_adv`` has the type of the ``x`` that was attacked: a float32 ``torch.Tensor`` on
    x's device, or a float32 numpy array. ``queries`` counts, per image, the model
    evaluations the attack spent while crafting: forward passes of the target for
    black-box attacks, passes of the model (forward, most with backward) for white-box
    ones, clean-output passes included. For a transfer attack they were spent on the
    surrogate and the target got none (``transfer=True``). ``objective`` and
    ``objective_clean`` are the per-image output MSE against the reference (ground truth,
    or f(x) for ``objective="clean"``) measured *on the target* at x_adv and at x;
    measuring them is not counted as queries. ``success`` is set by C&W only: the
    objective rose by ``cw_target + cw_confidence`` over its clean value, on the model
    the attack was crafted on. ``seconds`` is the crafting time. ``output`` is the
    target's output at x_adv (the pass that measured ``objective``; type as ``x_adv``), so
    callers need not run the target again.
    """

    x_adv: torch.Tensor | np.ndarray
    queries: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    objective: np.ndarray
    objective_clean: np.ndarray
    seconds: float
    spec: AttackSpec
    transfer: bool = False
    success: np.ndarray | None = field(default=None)
    output: torch.Tensor | np.ndarray | None = field(default=None, repr=False)

    @property
    def total_queries(self) -> int:
        """Queries summed over the batch."""
        return int(self.queries.sum())

    @property
    def psnr(self) -> np.ndarray:
        """Per-image PSNR (dB) of the attacked output against the objective's reference."""
        return psnr_from_mse(self.objective)

    @property
    def psnr_clean(self) -> np.ndarray:
        """Per-image PSNR (dB) of the clean output (inf for ``objective="clean"``)."""
        return psnr_from_mse(self.objective_clean)

    def summary(self) -> dict[str, Any]:
        """JSON-ready means and extremes over the batch, with the spec."""
        def _f(v: Any) -> float | None:
            v = float(v)
            return v if np.isfinite(v) else None

        out: dict[str, Any] = {
            "attack": self.spec.name,
            "images": len(self.queries),
            "transfer": self.transfer,
            "queries_mean": _f(self.queries.mean()),
            "queries_total": self.total_queries,
            "linf_max": _f(self.linf.max()),
            "l2_mean": _f(self.l2.mean()),
            "objective_mean": _f(self.objective.mean()),
            "objective_clean_mean": _f(self.objective_clean.mean()),
            "psnr_mean": _f(self.psnr.mean()),
            "psnr_worst": _f(self.psnr.min()),
            "psnr_clean_mean": _f(self.psnr_clean.mean()),
            "seconds": self.seconds,
            "spec": self.spec.to_dict(),
        }
        if self.success is not None:
            out["success_rate"] = float(np.mean(self.success))
        return out

    def to_json(self) -> str:
        """The summary as JSON text (x_adv itself is not included)."""
        return json.dumps(self.summary(), indent=2)
