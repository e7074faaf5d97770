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
:func:`defence_table` builds the table {restorer, + teacher, + student k, + student and
fine-tuned restorer} x {clean, PGD non-adaptive, PGD adaptive+EOT} with PSNR/SSIM and
latency per image.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from udc_edge.attacks import AttackSpec, attack
from udc_edge.errors import DataError, UsageError
from udc_edge.evaluation.metrics import psnr, ssim
from udc_edge.models.padding import Padded, run_padded
from udc_edge.models.purifier import Purifier, PurifierSampler, check_pair
from udc_edge.progress import Advance, _noop


def load_eval_set(data: str, count: int = 8, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` (degraded, ground truth) pairs as NCHW batches of ``size`` x ``size``.

    ``synth:DISPLAY`` degrades the held-out ``photos:test`` split; a folder is read as a
    paired dataset and its first ``count`` images are centre-cropped.
    """
    if count < 1 or size < 8:
        raise UsageError(f"--count {count} / --size {size}: need >= 1 image of >= 8 px")
    pairs = []
    if str(data).startswith("synth:"):
        from udc_edge.data.sources import make_source
        from udc_edge.data.synth import UDCSimulator, image_rng

        sim = UDCSimulator.for_display(str(data).split(":", 1)[1])
        if size < sim.min_size:
            raise UsageError(f"--size {size} is too small for the display's PSF", f"use --size >= {sim.min_size}")
        sample, _ = make_source("photos:test")
        for i in range(count):
            rng = image_rng(seed + 200_003, i)
            pairs.append(sim.simulate(sample(size, rng), rng))
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
        if self.sampler is not None:
            if noise is None:
                raise UsageError("the defended pipeline needs a noise tensor", "pass noise=torch.randn_like(x)")
            if self.bpda:
                with torch.no_grad():
                    purified = self.sampler(x, noise)
                x = x + (purified - x).detach()
            else:
                x = self.sampler(x, noise)
        return run_padded(self.restorer, x)


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


@dataclass(frozen=True)
class DefenceSpec:
    """How to attack and measure. ``draws``: evaluation noise draws per image."""

    eps: float = 8 / 255
    attack_steps: int = 20
    eot: int = 10
    draws: int = 4
    seed: int = 0
    adaptive: bool = True
    latency_repeats: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise UsageError(f"--eps {self.eps} is outside (0, 1]", "e.g. 8/255")
        for name in ("attack_steps", "eot", "draws", "latency_repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def pgd(self, seed_offset: int = 0) -> AttackSpec:
        return AttackSpec("pgd", eps=self.eps, steps=self.attack_steps, seed=self.seed + seed_offset)


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
    times = []
    with torch.no_grad():
        pipeline(x1, noise)
        for _ in range(repeats):
            t0 = time.perf_counter()
            pipeline(x1, noise)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def pgd_on_restorer(restorer: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec) -> torch.Tensor:
    """Non-adaptive: PGD crafted on the restorer alone (the defender's purifier unseen)."""
    return attack(Padded(restorer), x, y, spec.pgd()).x_adv


def pgd_adaptive(pipeline: DefendedPipeline, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec) -> torch.Tensor:
    """Adaptive: PGD on EOT(pipeline) (exact gradients, or BPDA if the pipeline says so)."""
    return attack(EOT(pipeline, spec.eot, seed=spec.seed + 1), x, y, spec.pgd(1)).x_adv


@dataclass
class DefenceRow:
    name: str
    purifier: str
    restorer: str
    clean: dict[str, float]
    nonadaptive: dict[str, float]
    adaptive: dict[str, float] | None
    adaptive_kind: str
    latency_ms: float


@dataclass
class DefenceTable:
    rows: list[DefenceRow]
    spec: dict[str, Any]
    images: int
    size: list[int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        eps = f"{self.spec['eps'] * 255:.0f}/255"
        head = (f"| defence | clean PSNR / SSIM | PGD {eps} non-adaptive | PGD {eps} adaptive | adaptive attack "
                "| latency / image (ms) |\n|---|---|---|---|---|---|")
        lines = [head]
        for r in self.rows:
            def cell(m: dict | None) -> str:
                if m is None:
                    return "not run"
                worst = f" (worst {m['psnr_worst']:.2f})" if m.get("draws", 1) > 1 else ""
                return f"{m['psnr']:.2f} dB / {m['ssim']:.3f}{worst}"
            lines.append(f"| {r.name} | {cell(r.clean)} | {cell(r.nonadaptive)} | {cell(r.adaptive)} | "
                         f"{r.adaptive_kind} | {r.latency_ms:.1f} |")
        note = (f"\n{self.images} images of {self.size[0]}x{self.size[1]}; PGD {self.spec['attack_steps']} steps; "
                f"defended numbers are means over {self.spec['draws']} noise draws (worst draw per image in "
                "brackets). Non-adaptive: crafted on the row's restorer alone, then purified.")
        return "\n".join(lines) + note + "".join(f"\n- {n}" for n in self.notes) + "\n"


def _row(name: str, restorer: nn.Module, restorer_name: str, purifier: Purifier | None, x: torch.Tensor,
         y: torch.Tensor, x_adv: torch.Tensor, spec: DefenceSpec, progress: Advance) -> DefenceRow:
    sampler = purifier.sampler() if purifier is not None else None
    exact = DefendedPipeline(restorer, sampler)
    clean = measure(exact, x, y, spec.draws, spec.seed)
    nonad = measure(exact, x_adv, y, spec.draws, spec.seed)
    progress(1, status=f"{name}: clean {clean['psnr']:.2f}, non-adaptive {nonad['psnr']:.2f} dB")
    adaptive, kind = None, "not run"
    if purifier is None:
        adaptive, kind = nonad, "white-box PGD (undefended: same as non-adaptive)"
    elif spec.adaptive:
        bpda = purifier.role == "teacher"
        kind = (f"BPDA through the {purifier.steps}-step teacher" if bpda else
                f"exact gradients through {purifier.steps} step(s)") + f" + EOT({spec.eot})"
        x_ad = pgd_adaptive(DefendedPipeline(restorer, sampler, bpda=bpda), x, y, spec)
        adaptive = measure(exact, x_ad, y, spec.draws, spec.seed)
    progress(1, status=f"{name}: adaptive {adaptive['psnr']:.2f} dB" if adaptive else name)
    return DefenceRow(name=name, purifier="none" if purifier is None else
                      f"{purifier.role} t*={purifier.t_star} steps={purifier.steps}", restorer=restorer_name,
                      clean=clean, nonadaptive=nonad, adaptive=adaptive, adaptive_kind=kind,
                      latency_ms=latency_ms(exact, x, spec.latency_repeats))


def defence_table(restorer: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec = DefenceSpec(),
                  teacher: Purifier | None = None, students: list[Purifier] | tuple = (),
                  finetuned: nn.Module | None = None, finetuned_purifier: Purifier | None = None,
                  progress: Advance = _noop) -> DefenceTable:
    """Rows: restorer; + teacher; + each student; + purifier and fine-tuned restorer
    (``finetuned_purifier``, default the first student, else the teacher)."""
    for s in students:
        if teacher is not None:
            check_pair(teacher, s, "the teacher", f"the {s.steps}-step student")
    notes = list(dict.fromkeys(f"the {p.role} purifier was trained at {p.resolution} px and runs at {x.shape[-2]}x{x.shape[-1]} "
             "(fully convolutional)" for p in [teacher, *students] if p is not None and p.resolution != x.shape[-1]))
    restorer.eval()
    x_adv = pgd_on_restorer(restorer, x, y, spec)
    rows = [_row("restorer", restorer, "restorer", None, x, y, x_adv, spec, progress)]
    if teacher is not None:
        rows.append(_row(f"+ teacher ({teacher.steps} steps)", restorer, "restorer", teacher, x, y, x_adv, spec,
                         progress))
    for s in students:
        rows.append(_row(f"+ student k={s.steps}", restorer, "restorer", s, x, y, x_adv, spec, progress))
    if finetuned is not None:
        pur = finetuned_purifier or (students[0] if students else teacher)
        if pur is None:
            raise UsageError("a fine-tuned restorer row needs a purifier", "give a teacher or student too")
        finetuned.eval()
        x_adv_ft = pgd_on_restorer(finetuned, x, y, spec)
        label = f"student k={pur.steps}" if pur.role == "student" else "teacher"
        rows.append(_row(f"+ {label} + fine-tuned restorer", finetuned, "fine-tuned", pur, x, y, x_adv_ft, spec,
                         progress))
        notes.append("the fine-tuned row's non-adaptive PGD is crafted on the fine-tuned restorer alone")
    return DefenceTable(rows=rows, spec=asdict(spec), images=len(x), size=list(x.shape[-2:]), notes=notes)


def gain_recovery(table: DefenceTable, student_row: str, teacher_row: str, column: str = "nonadaptive"
                  ) -> float | None:
    """Fraction of the teacher's attacked-PSNR gain over the undefended restorer that a
    student keeps: (student - restorer) / (teacher - restorer); None if the teacher gains
    nothing."""
    by = {r.name: r for r in table.rows}
    base = getattr(by["restorer"], column)["psnr"]
    gain_t = getattr(by[teacher_row], column)["psnr"] - base
    if not math.isfinite(gain_t) or gain_t <= 0:
        return None
    return (getattr(by[student_row], column)["psnr"] - base) / gain_t
