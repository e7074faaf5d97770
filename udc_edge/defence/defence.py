"""Honest evaluation of the purification defence: purifier -> restorer under attack.

Two labelled kinds of PGD (L-inf, default 8/255, 20 steps, the project's ``attacks.pgd``):

- **non-adaptive**: crafted on the restorer alone, then fed to the defended pipeline;
- **adaptive + EOT**: crafted on the defended pipeline itself. Gradients go exactly
  through a k-step student; through the long teacher they use BPDA (the purifier's
  backward pass is the identity, Athalye et al. 2018). The purifier's noise is handled by
  EOT: :class:`EOT` is a module whose forward averages the pipeline's output over
  ``samples`` fresh noise draws (default 10), and PGD runs on it unchanged.

Every defended number is measured over ``draws`` evaluation noise draws (other seeds than
the attack's): the mean, and the worst case (per image, the worst draw; then averaged).
Query attacks (SimBA, Square) are black-box on the pipeline as deployed (fresh noise per
query). :mod:`udc_edge.defence.defence_table` assembles these into the defence table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from udc_edge.attacks import AttackSpec, attack, craft
from udc_edge.core.errors import DataError, UsageError
from udc_edge.core.metrics import psnr, ssim
from udc_edge.core.timing import median_ms
from udc_edge.diffusion.pipeline import purify_restore
from udc_edge.diffusion.purifier import Purifier
from udc_edge.diffusion.sampler import PurifierSampler
from udc_edge.models.padding import Padded


def load_eval_set(data: str, count: int = 8, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (degraded, ground truth) pairs as NCHW batches of ``size`` x ``size``.

    ``synth:DISPLAY`` degrades the held-out ``photos:test`` split; a folder is read as a
    paired dataset and its first ``count`` images are centre-cropped.
    """
    if count < 1 or size < 8:
        raise UsageError(f"{count} image(s) of {size} px asked for: need at least 1 image of at least 8 px",
                         "raise the image count (--count/--limit) or --size")
    pairs = []
    if str(data).startswith("synth:"):
        from udc_edge.data.synth import UDCSimulator
        from udc_edge.training.card import heldout_pairs

        display = str(data).split(":", 1)[1]
        min_size = UDCSimulator.for_display(display).min_size
        if size < min_size:
            raise UsageError(f"--size {size} is too small for the display's PSF", f"use --size >= {min_size}")
        pairs = heldout_pairs(display, count, size, seed + 200_003)
    else:
        from udc_edge.data.readers import open_paired_dataset

        ds = open_paired_dataset(data)
        if not ds.has_gt:
            raise DataError(f"dataset {data} has no ground truth", "evaluation needs lq/ and gt/")
        for i in range(min(count, len(ds))):
            p = ds[i]
            h, w = p.lq.shape[:2]
            if min(h, w) < size:
                raise DataError(f"image {p.name} ({h}x{w}) is smaller than --size {size}", "use a smaller --size")
            y0, x0 = (h - size) // 2, (w - size) // 2
            pairs.append((p.lq[y0 : y0 + size, x0 : x0 + size], p.gt[y0 : y0 + size, x0 : x0 + size]))

    def batch(k: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.stack([p[k] for p in pairs]).transpose(0, 3, 1, 2)))

    return batch(0).float(), batch(1).float()


class DefendedPipeline(nn.Module):
    """``forward(x, noise)``: purifier (if any) then restorer. ``bpda=True`` runs the
    purifier without a graph and passes the gradient straight through it (identity)."""

    def __init__(self, restorer: nn.Module, sampler: PurifierSampler | None = None, bpda: bool = False):
        super().__init__()
        self.restorer, self.sampler, self.bpda = restorer, sampler, bpda

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.sampler is not None and noise is None:
            raise UsageError("the defended pipeline needs a noise tensor", "pass noise=torch.randn_like(x)")
        return purify_restore(self.sampler, self.restorer, x, noise, clamp=False, pad=True, bpda=self.bpda)


class EOT(nn.Module):
    """Expectation over transformation: ``forward(x)`` is the mean of ``pipeline(x, n_s)``
    over ``samples`` noise draws. The draws come from one generator seeded once, so every
    call (every PGD step) sees fresh noise, and a run is reproducible."""

    def __init__(self, pipeline: DefendedPipeline, samples: int = 10, seed: int = 0):
        super().__init__()
        if samples < 1:
            raise UsageError(f"--eot {samples} must be >= 1", "DiffPure-style evaluations use 10-20")
        self.pipeline, self.samples = pipeline, samples
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for _ in range(self.samples):
            total = total + self.pipeline(x, torch.randn(x.shape, generator=self.gen).to(x.device))
        return total / self.samples


#: Samplers of up to this many steps get exact gradients (adaptive attacks) and query
#: attacks; longer ones get BPDA and no query attacks (they would take too long).
MAX_EXACT_STEPS = 4


@dataclass(frozen=True)
class DefenceSpec:
    """How to attack and measure. ``draws``: evaluation noise draws per image.

    ``attacks``: PGD (always, the headline: non-adaptive and adaptive + EOT) plus any of
    ``ifgsm``, ``mifgsm``, ``cw`` (crafted on the restorer alone: non-adaptive; I-FGSM and
    MI-FGSM also adaptive + EOT) and ``simba``, ``square`` (black-box: they query the
    defended pipeline itself, which draws fresh purifier noise for every query).
    """

    eps: float = 8 / 255
    attack_steps: int = 20
    eot: int = 10
    draws: int = 4
    seed: int = 0
    adaptive: bool = True
    latency_repeats: int = 5
    attacks: tuple[str, ...] = ("pgd", "cw", "simba")
    simba_iterations: int = 500
    square_queries: int = 500
    cw_search_steps: int = 5
    cw_max_iter: int = 50
    attack_batch: int = 0  # images per adaptive (EOT) attack batch; 0: all at once

    def __post_init__(self) -> None:
        from udc_edge.attacks import parse_attack_names

        if not 0 < self.eps <= 1:
            raise UsageError(f"--eps {self.eps} is outside (0, 1]", "e.g. 8/255")
        for name in ("attack_steps", "eot", "draws", "latency_repeats", "simba_iterations", "square_queries",
                     "cw_search_steps", "cw_max_iter"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.attack_batch < 0:
            raise UsageError(f"--attack-batch must be >= 0 (0: all images at once), got {self.attack_batch}")
        names = self.attacks if isinstance(self.attacks, str) else ",".join(self.attacks)
        object.__setattr__(self, "attacks", tuple(dict.fromkeys(("pgd", *parse_attack_names(names)))))
        for name in self.attacks:  # every attack's own checks, before any attack runs
            self.attack(name)

    def pgd(self, seed_offset: int = 0) -> AttackSpec:
        return self.attack("pgd", seed_offset)

    def attack(self, name: str, seed_offset: int = 0) -> AttackSpec:
        """The :class:`AttackSpec` of one column (C&W is an L2 attack: no eps)."""
        common = {"seed": self.seed + seed_offset}
        if name == "cw":
            return AttackSpec("cw", cw_search_steps=self.cw_search_steps, cw_max_iter=self.cw_max_iter, **common)
        if name == "simba":
            return AttackSpec("simba", eps=self.eps, simba_iterations=self.simba_iterations, **common)
        if name == "square":
            return AttackSpec("square", eps=self.eps, square_queries=self.square_queries, **common)
        return AttackSpec(name, eps=self.eps, steps=self.attack_steps, **common)


DEFENDED_ATTACKS = "pgd,cw,simba"  # eval --purifier's columns when --attacks is not given
DEFENDED_IMAGES = 8  # eval --purifier's centre crops when --limit is not given


def defence_specs(eps_values: tuple[float, ...], attacks: str | None = None, **fields: Any) -> list[DefenceSpec]:
    """One spec per budget for ``eval --purifier``; ``fields`` left None keep DefenceSpec's
    defaults, lighter than a plain eval's since every query of the defended pipeline purifies."""
    from udc_edge.attacks import parse_attack_names

    names = parse_attack_names(attacks or DEFENDED_ATTACKS)
    given = {k: v for k, v in fields.items() if v is not None}
    return [DefenceSpec(eps=e, attacks=names, **given) for e in eps_values]


def check_defended_eval(plain_only: dict[str, object], engine: bool, limit: int | None) -> int:
    """Refuse what a defended eval cannot honour (an engine, or any option in ``plain_only``
    that is set); returns the number of images (``limit`` or DEFENDED_IMAGES)."""
    if engine or any(plain_only.values()):
        raise UsageError("--purifier evaluates a torch restorer (name or checkpoint) against ground truth",
                         "drop --surrogate/--arch/--arch-kwargs/--weights/--objective clean")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} must be >= 1 with --purifier", "e.g. --limit 8")
    return DEFENDED_IMAGES if limit is None else limit


@torch.no_grad()
def measure(pipeline: DefendedPipeline, x: torch.Tensor, y: torch.Tensor, draws: int = 4, seed: int = 0
            ) -> dict[str, float]:
    """Mean PSNR/SSIM over images and noise draws, and the worst draw per image (averaged)."""
    pipeline.eval()
    n_draws = draws if pipeline.sampler is not None else 1
    gen = torch.Generator().manual_seed(10_007 + seed)
    p = np.zeros((n_draws, len(x)))
    s = np.zeros((n_draws, len(x)))
    for d in range(n_draws):
        out = pipeline(x, torch.randn(x.shape, generator=gen)).clamp(0, 1).numpy()
        for i in range(len(x)):
            p[d, i] = psnr(out[i], y[i].numpy())
            s[d, i] = ssim(out[i], y[i].numpy())
    return {"psnr": float(p.mean()), "ssim": float(s.mean()), "psnr_worst": float(p.min(axis=0).mean()),
            "ssim_worst": float(s.min(axis=0).mean()), "draws": n_draws}


def latency_ms(pipeline: DefendedPipeline, x: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time (ms) of one image through the pipeline, after one warm-up run."""
    x1 = x[:1]
    noise = torch.randn(x1.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return median_ms(lambda: pipeline(x1, noise), repeats)


def craft_on_restorer(restorer: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec,
                    name: str = "pgd") -> torch.Tensor:
    """Non-adaptive: the attack crafted on the restorer alone (the defender's purifier unseen)."""
    return craft(Padded(restorer), x, y, spec.attack(name))


#: Seed offset between the image batches of an adaptive attack (batch b uses 1 + b * this).
BATCH_SEED_STRIDE = 1000


def craft_adaptive(pipeline: DefendedPipeline, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec,
                   name: str = "pgd") -> torch.Tensor:
    """Adaptive: the attack on EOT(pipeline) (exact gradients, or BPDA if the pipeline says so).

    EOT keeps every noise sample's graph until the backward pass, so memory grows with
    images x samples x the purifier's draws; ``spec.attack_batch`` images at a time bounds
    it. Batch b seeds its attack and EOT noise with offset ``1 + b * BATCH_SEED_STRIDE``: the
    first batch (and an unbatched run) is the same attack as before batching existed.
    """
    step = spec.attack_batch or len(x)
    parts = []
    for b, start in enumerate(range(0, len(x), step)):
        offset = 1 + b * BATCH_SEED_STRIDE
        parts.append(craft(EOT(pipeline, spec.eot, seed=spec.seed + offset), x[start : start + step],
                           y[start : start + step], spec.attack(name, offset)))
    return torch.cat(parts)


def black_box(pipeline: DefendedPipeline, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec,
              name: str) -> tuple[torch.Tensor, float]:
    """A query attack on the pipeline as deployed: a defended one draws fresh purifier
    noise for every query. Returns the inputs and the mean queries per image."""
    target = EOT(pipeline, 1, seed=spec.seed + 2) if pipeline.sampler is not None else pipeline
    res = attack(target, x, y, spec.attack(name, 2))
    return res.x_adv, float(np.mean(res.queries))


def uses_bpda(purifier: Purifier) -> bool:
    """BPDA through long samplers (the N-step teacher); exact gradients through <= 4 steps."""
    return purifier.steps > MAX_EXACT_STEPS


def describe(purifier: Purifier) -> str:
    """``teacher t*=0.1 steps=50`` (plus ``average=4`` when it averages noise draws)."""
    avg = f" average={purifier.average}" if purifier.average > 1 else ""
    return f"{purifier.role} t*={purifier.t_star} steps={purifier.steps}{avg}"
