"""The reference set verify compares an engine with: torch outputs, transferred adversarial
inputs and black-box scores on the same pairs, computed live or saved in (and loaded from) a bundle.

Its own module so that ``bundle`` (which saves one) and ``verify`` (which reads one) both
depend on it rather than on each other."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.attacks import AttackSpec, parse_attack_names
from udc_edge.core.errors import DataError, UsageError
from udc_edge.core.metrics import psnr, ssim
from udc_edge.core.progress import Advance, noop
from udc_edge.data.images import to_hwc
from udc_edge.data.readers import PairedDataset
from udc_edge.evaluation.robustness import as_target, forward, output_image, run_one

#: Pairs verified when --limit is not given (fewer if the data has fewer).
DEFAULT_LIMIT = 8


@dataclass(frozen=True)
class VerifySpec:
    attacks: tuple[str, ...] = ("pgd", "simba")
    eps: float = 8 / 255
    steps: int = 20
    simba_iterations: int = 200
    max_psnr_drop: float = 0.3
    max_ssim_drop: float = 0.01
    min_fidelity: float = 35.0
    direct: bool = True  # white-box attacks crafted on the engine's replica (rows "not run" if it cannot be made)
    min_replica_match: float = 50.0
    cw_iterations: int = 100
    cw_search_steps: int = 9
    limit: int | None = None  # None: up to DEFAULT_LIMIT pairs; a number: exactly that many
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_psnr_drop", "max_ssim_drop", "min_fidelity", "min_replica_match"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {self.limit}")
        for name in ("cw_iterations", "cw_search_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "attacks", parse_attack_names(",".join(self.attacks)) if self.attacks else ())

    def pairs(self, available: int) -> int:
        """How many of ``available`` pairs a verification uses."""
        return min(DEFAULT_LIMIT if self.limit is None else self.limit, available)

    def attack_spec(self, name: str) -> AttackSpec:
        return AttackSpec(name, eps=None if name == "cw" else self.eps, steps=self.steps, seed=self.seed,
                          simba_iterations=self.simba_iterations, square_queries=self.simba_iterations,
                          cw_max_iter=self.cw_iterations, cw_search_steps=self.cw_search_steps)


@dataclass
class ReferenceSet:
    """Inputs, ground truth and the reference's outputs: what an engine is verified against."""

    names: list[str]
    lq: list[np.ndarray]
    gt: list[np.ndarray]
    ref_clean: list[np.ndarray]
    transferred: dict[str, list[np.ndarray]] = field(default_factory=dict)  # label -> x_adv per image
    ref_transferred: dict[str, list[np.ndarray]] = field(default_factory=dict)  # label -> ref output
    blackbox_ref: dict[str, list[dict]] = field(default_factory=dict)  # label -> {psnr, ssim} per image
    attack_params: dict = field(default_factory=dict)  # attacks, eps, steps, simba_iterations, seed used

    def save(self, folder: str | os.PathLike) -> None:
        """As .npy arrays (never pickled) plus an index JSON."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"lq": self.lq, "gt": self.gt, "ref_clean": self.ref_clean}
        arrays.update({f"adv_{_fname(k)}": v for k, v in self.transferred.items()})
        arrays.update({f"refadv_{_fname(k)}": v for k, v in self.ref_transferred.items()})
        for key, imgs in arrays.items():
            np.save(folder / f"{key}.npy", np.stack(imgs).astype(np.float32), allow_pickle=False)
        (folder / "reference.json").write_text(json.dumps(
            {"names": self.names, "transferred": sorted(self.transferred), "blackbox_ref": self.blackbox_ref,
             "attack_params": self.attack_params}, indent=2))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ReferenceSet:
        folder = Path(folder)
        try:
            idx = json.loads((folder / "reference.json").read_text())
            def arr(key: str) -> list[np.ndarray]:
                return list(np.load(folder / f"{key}.npy", allow_pickle=False))
            rs = cls(idx["names"], arr("lq"), arr("gt"), arr("ref_clean"), blackbox_ref=idx["blackbox_ref"],
                     attack_params=idx.get("attack_params", {}))
            for k in idx["transferred"]:
                rs.transferred[k], rs.ref_transferred[k] = arr(f"adv_{_fname(k)}"), arr(f"refadv_{_fname(k)}")
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"reference set in {folder} is incomplete or corrupt: {exc}", "rebuild the bundle") from exc
        return rs


ATTACK_PARAMS = ("attacks", "eps", "steps", "simba_iterations", "seed", "cw_iterations", "cw_search_steps")


def _fname(label: str) -> str:
    """A file-name-safe form of an attack label such as ``pgd@8/255``."""
    return label.replace("/", "_").replace("@", "-")


def make_reference_set(reference: Any, dataset: PairedDataset, spec: VerifySpec, progress: Advance = noop,
                       craft_on: Any = None, craft_label: str = "") -> ReferenceSet:
    """Run the torch reference (and craft the transferred attacks) on ``spec.pairs(len(dataset))`` pairs.

    White-box attacks are crafted on ``craft_on`` when given (e.g. an EOT-averaged defended
    pipeline: the adaptive attack), else on the reference itself."""
    if not dataset.has_gt:
        raise DataError("verify needs ground truth (lq/ and gt/)", "give a paired dataset folder")
    if spec.limit is not None and len(dataset) < spec.limit:
        raise DataError(f"the data has {len(dataset)} pairs, fewer than --limit {spec.limit}", "lower --limit")
    ref = as_target(reference)
    crafter = as_target(craft_on) if craft_on is not None else ref
    n = spec.pairs(len(dataset))
    rs = ReferenceSet([], [], [], [], attack_params={k: getattr(spec, k) for k in ATTACK_PARAMS})
    for i in range(n):
        p = dataset[i]
        rs.names.append(p.name)
        rs.lq.append(p.lq)
        rs.gt.append(p.gt)
        rs.ref_clean.append(forward(ref, p.lq))
        for name in spec.attacks:
            a = spec.attack_spec(name)
            label = f"{name}@{_eps(a)}"
            if a.is_whitebox:
                label += craft_label
                adv = to_hwc(run_one(crafter, a, p.lq, p.gt).x_adv)
                rs.transferred.setdefault(label, []).append(adv)
                rs.ref_transferred.setdefault(label, []).append(forward(ref, adv))
            else:
                out = output_image(run_one(ref, a, p.lq, p.gt).output)
                rs.blackbox_ref.setdefault(label, []).append({"psnr": psnr(out, p.gt), "ssim": ssim(out, p.gt)})
        progress(1)
    return rs


def _eps(a: AttackSpec) -> str:
    return "L2" if a.eps is None else f"{round(a.eps * 255, 2):g}/255"
