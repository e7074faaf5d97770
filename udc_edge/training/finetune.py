"""Fine-tune a restorer on purified inputs (Song et al. 2024, step 2 of the defence).

Purification removes the adversarial pattern *and* some detail; continuing to train the
restorer on what the purifier outputs teaches it to restore that detail too. Each batch
is split evenly over the ``mix`` components:

- ``clean``: the degraded input itself (keeps the undefended restorer good);
- ``purified``: purifier(input, noise), fresh noise per step;
- ``adversarial``: PGD (``eps``, ``attack_steps``) crafted on the current restorer
  (plain adversarial training);
- ``purified-adversarial``: the same PGD input, then purified (the non-adaptive attack
  the deployed pipeline sees).

Loss: L2 + ``ssim_weight`` x (1 - SSIM) + ``fft_weight`` x FFT-L1, against ground truth
(``target="gt"``) or against the original restorer's output on the un-purified input
(``target="restorer"``: the defended pipeline learns to reproduce the undefended one). A VGG perceptual loss
needs pretrained weights that cannot be downloaded here (and torchvision is not a
dependency), so the offline default is SSIM + frequency; no ``--perceptual-weights``.
Validation: PSNR of purifier -> restorer on fixed val images and noise (``best/`` is
chosen by it) and of the restorer on clean inputs. The output is an ordinary restorer
checkpoint (``OUT/best``, ``OUT/last``, ``OUT/state.safetensors`` with the optimizer state,
step and history saved at every validation, ``OUT/train_log.json``), written by the one
:class:`~udc_edge.training.trainer.Trainer`; works under torchrun.

``resume`` continues an interrupted run from ``OUT/last`` and the state, exactly (batches,
purifier noise and PGD starts derive from (seed, step, rank)). Resuming with another
restorer, purifier, data, mix, batch, patch, eps, attack steps, loss weights, seed, pool
or validation count is refused; other changes (lr, steps, ...) are recorded in the log.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from udc_edge.attacks import AttackSpec, attack
from udc_edge.core.errors import UsageError
from udc_edge.core.progress import Advance, noop
from udc_edge.diffusion.pipeline import PurifiedRestorer, purify
from udc_edge.diffusion.purifier import load_purifier, state_digest
from udc_edge.diffusion.sampler import PurifierSampler
from udc_edge.models import save_checkpoint
from udc_edge.models.zoo import load_model
from udc_edge.training.losses import fft_l1
from udc_edge.training.pairs import TrainData
from udc_edge.training.restorer import evaluate_pairs
from udc_edge.training.state import options
from udc_edge.training.trainer import LoopSpec, Trainer, check_loop_options, to_device

MIX_NAMES = ("clean", "purified", "adversarial", "purified-adversarial")
#: what the restorer learns to output: ground truth, or the original restorer's output on
#: the clean input (consistency: the defended pipeline should reproduce the undefended one)
TARGETS = ("gt", "restorer")
#: Spec fields a resumed run must share with the interrupted one (field -> option).
RESUME_MUST_MATCH = options("purifier", "data", "mix", "batch", "patch", "eps", "attack_steps", "ssim_weight",
                            "fft_weight", "seed", "pool", "val_count", "target", restorer="RESTORER",
                            purifier_config="the purifier's settings (--purifier)",
                            purifier_digest="the purifier's weights (--purifier)")


def parse_mix(text: str) -> tuple[str, ...]:
    """``"clean,purified"`` -> ("clean", "purified"); unknown or repeated names are errors."""
    names = tuple(p.strip() for p in str(text).split(",") if p.strip())
    bad = [n for n in names if n not in MIX_NAMES]
    if not names or bad or len(set(names)) != len(names):
        raise UsageError(f"--mix {text!r} is invalid" + (f" (unknown: {', '.join(bad)})" if bad else ""),
                         f"give distinct names from {', '.join(MIX_NAMES)}, comma separated")
    return names


@dataclass(frozen=True)
class FinetuneSpec:
    """A fine-tuning run (validated on construction)."""

    restorer: str
    purifier: str
    out: str = "runs/restorer-ft"
    data: str = "synth:poled"
    mix: tuple[str, ...] = ("clean", "purified")
    steps: int = 500
    batch: int = 8
    patch: int = 64
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup: int = 20
    eps: float = 8 / 255
    attack_steps: int = 5
    ssim_weight: float = 0.2
    fft_weight: float = 0.05
    val_every: int = 100
    val_count: int = 8
    seed: int = 0
    overwrite: bool = False
    threads: int = 0
    pool: int = 192
    resume: bool = False
    target: str = "gt"
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        mix = self.mix if isinstance(self.mix, str) else ",".join(self.mix)
        object.__setattr__(self, "mix", parse_mix(mix))
        for name in ("steps", "batch", "patch", "val_every", "val_count", "pool", "warmup", "attack_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch < len(self.mix):
            raise UsageError(f"--batch {self.batch} is smaller than the {len(self.mix)} --mix components",
                             f"use --batch >= {len(self.mix)}")
        if not self.lr > 0 or not 0 < self.eps <= 1:
            raise UsageError(f"--lr must be > 0 and --eps in (0, 1]; got {self.lr}, {self.eps}")
        if self.target not in TARGETS:
            raise UsageError(f"--target {self.target!r} is unknown", f"use one of {', '.join(TARGETS)}")
        if self.ssim_weight < 0 or self.fft_weight < 0:
            raise UsageError("--ssim-weight and --fft-weight must be >= 0")
        check_loop_options(self)


def ssim_torch(pred: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Differentiable mean SSIM (Gaussian window, data range 1), per channel."""
    c = pred.shape[1]
    ax = torch.arange(window, dtype=pred.dtype) - (window - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = (g / g.sum())
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(pred), blur(target)
    sxx = blur(pred * pred) - mu_x**2
    syy = blur(target * target) - mu_y**2
    sxy = blur(pred * target) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.mean()


def finetune_loss(pred: torch.Tensor, target: torch.Tensor, ssim_weight: float, fft_weight: float) -> torch.Tensor:
    loss = F.mse_loss(pred, target)
    if ssim_weight > 0:
        loss = loss + ssim_weight * (1 - ssim_torch(pred, target))
    if fft_weight > 0:
        loss = loss + fft_weight * fft_l1(pred, target)
    return loss


class FixedNoisePipeline(PurifiedRestorer):
    """The exported purifier -> restorer pipeline with noise drawn from ``seed`` on every
    call: a one-input model for validation."""

    def __init__(self, sampler: PurifierSampler, restorer: nn.Module, seed: int = 0):
        super().__init__(sampler, restorer)
        self.seed, self.in_channels = seed, 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed))  # on the CPU
        return super().forward(x, noise.to(x.device))


def _inputs(component: str, lq: torch.Tensor, gt: torch.Tensor, restorer: nn.Module, sampler: PurifierSampler,
            spec: FinetuneSpec, seed: int) -> torch.Tensor:
    """The restorer's training input for one mix component."""
    gen = torch.Generator().manual_seed(seed)
    if component == "clean":
        return lq
    x = lq
    if component in ("adversarial", "purified-adversarial"):
        x = attack(restorer, lq, gt, AttackSpec("pgd", eps=spec.eps, steps=spec.attack_steps,
                                                seed=seed % 2**31)).x_adv
    if component in ("purified", "purified-adversarial"):
        with torch.no_grad():
            x = purify(sampler, x, torch.randn(x.shape, generator=gen).to(x.device), clamp=False)
    return x.detach()


@dataclass
class FinetuneReport:
    out: str
    steps: int
    seconds: float
    before: dict[str, float]
    best: dict[str, Any]
    history: list[dict]

    def summary(self) -> str:
        b, a = self.before, self.best
        text = (f"fine-tuned {self.steps} steps in {self.seconds:.0f} s: purified->restored PSNR "
                f"{b['psnr']:.2f} -> {a['psnr']:.2f} dB, clean-input PSNR {b['clean_psnr']:.2f} -> "
                f"{a['clean_psnr']:.2f} dB; restorer in {self.out}/best")
        if a["psnr"] <= b["psnr"]:  # best/ is the best *fine-tuned* step, which can be worse than none
            text += ("\nwarning: no validation beat the restorer before fine-tuning on purified inputs; "
                     "the original restorer is the better choice behind this purifier")
        return text


def _validate(restorer: nn.Module, sampler: PurifierSampler, val: list, seed: int) -> dict[str, float]:
    clean = evaluate_pairs(restorer, val)
    pur = evaluate_pairs(FixedNoisePipeline(sampler, restorer, seed), val)
    return {"psnr": pur["psnr"], "ssim": pur["ssim"], "clean_psnr": clean["psnr"], "clean_ssim": clean["ssim"],
            "input_psnr": clean["input_psnr"]}


class FinetuneTrainer(Trainer):
    """Fine-tuning hooks: the --mix inputs, L2 + SSIM + FFT loss; best/ by purified->restored PSNR."""

    kind, metric, higher_is_better = "finetune", "psnr", True
    must_match = RESUME_MUST_MATCH
    validate_at_start = True

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        spec = self.spec
        restorer, self.rdesc = load_model(spec.restorer)
        restorer = restorer.to(self.device)
        # --target restorer: the original weights, before a resume loads the fine-tuned ones
        self.reference = copy.deepcopy(restorer).eval() if spec.target == "restorer" else None
        purifier, self.pdesc = load_purifier(spec.purifier)
        # recorded with every checkpoint and compared on resume (same purifier settings and weights)
        self.pur_record = {"purifier_config": json.loads(json.dumps(purifier.config())),
                           "purifier_digest": state_digest(purifier)}
        self.sampler = purifier.to(self.device).sampler().eval()
        for p in purifier.parameters():
            p.requires_grad_(False)
        need = FixedNoisePipeline(self.sampler, restorer).multiple
        if spec.patch % need:
            raise UsageError(f"--patch {spec.patch} is not a multiple of {need} (restorer and purifier sizes)",
                             f"use --patch {-(-spec.patch // need) * need}")
        self.config = {"arch": self.rdesc["arch"], "kwargs": self.rdesc["kwargs"]}
        return restorer, restorer

    def record(self) -> dict[str, Any]:
        spec, rdesc, pdesc = self.spec, self.rdesc, self.pdesc
        return {"finetuned_from": rdesc.get("name", rdesc.get("path", spec.restorer)),
                "purifier": pdesc.get("name", pdesc.get("path", spec.purifier)), **self.pur_record}

    def prepare(self, data: TrainData) -> None:
        self.val = data.val

    def loss(self, batch: Any, net: torch.nn.Module) -> torch.Tensor:
        spec = self.spec
        lq, gt, rng = batch
        lq, gt = to_device(self.device, lq, gt)
        chunks = np.array_split(np.arange(spec.batch), len(spec.mix))
        xs = [_inputs(c, lq[idx], gt[idx], self.model, self.sampler, spec, int(rng.integers(2**62)))
              for c, idx in zip(spec.mix, chunks, strict=True)]
        if self.reference is not None:
            with torch.no_grad():
                gt = self.reference(lq)
        return finetune_loss(net(torch.cat(xs)), gt, spec.ssim_weight, spec.fft_weight)

    def validate(self) -> dict[str, float]:
        return _validate(self.model, self.sampler, self.val, self.spec.seed)

    def status(self, m: dict[str, Any]) -> str:
        return f"val purified {m['psnr']:.2f} dB, clean {m['clean_psnr']:.2f} dB"

    def save_model(self, folder: Path, extra: dict[str, Any]) -> None:
        save_checkpoint(folder, self.model, self.config, extra, overwrite=True)


def finetune_restorer(spec: FinetuneSpec, progress: Advance = noop, setup_progress: Advance = noop
                      ) -> FinetuneReport:
    """Continue training ``spec.restorer`` on the ``spec.mix`` inputs; returns the report."""
    trainer = FinetuneTrainer(spec, LoopSpec.of(spec), progress, setup_progress)
    r = trainer.run()
    before = {k: v for k, v in r.history[0].items() if k not in ("step", "seconds")}
    report = FinetuneReport(out=r.out, steps=r.steps, seconds=r.seconds, before=before,
                            best=r.best or {"psnr": -1.0}, history=r.history)
    trainer.write_log(report)
    return report
