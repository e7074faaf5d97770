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
step and history saved at every validation, ``OUT/train_log.json``); works under torchrun.

``resume`` continues an interrupted run from ``OUT/last`` and the state, exactly (batches,
purifier noise and PGD starts derive from (seed, step, rank)). Resuming with another
restorer, purifier, data, mix, batch, patch, eps, attack steps, loss weights, seed, pool
or validation count is refused; other changes (lr, steps, ...) are recorded in the log.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from udc_edge.attacks import AttackSpec, attack
from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.progress import Advance, noop
from udc_edge.diffusion.pipeline import PurifiedRestorer
from udc_edge.diffusion.purifier import PurifierSampler, load_purifier, state_digest
from udc_edge.models.zoo import load_model
from udc_edge.training import distributed as D
from udc_edge.training.losses import fft_l1
from udc_edge.training.pairs import make_train_data
from udc_edge.training.restorer import evaluate_pairs, lr_at, prepare_out_dir, save_run
from udc_edge.training.state import options, resume_run

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
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other", "pick one")


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
        return super().forward(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(self.seed)))


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
            x = sampler(x, torch.randn(x.shape, generator=gen))
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


def finetune_restorer(spec: FinetuneSpec, progress: Advance = noop, setup_progress: Advance = noop
                      ) -> FinetuneReport:
    """Continue training ``spec.restorer`` on the ``spec.mix`` inputs; returns the report."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    info = D.init_distributed("cpu")
    out = prepare_out_dir(spec.out, spec.resume, spec.overwrite, info)
    restorer, rdesc = load_model(spec.restorer)
    # --target restorer: the original weights, before a resume loads the fine-tuned ones
    reference = copy.deepcopy(restorer).eval() if spec.target == "restorer" else None
    purifier, pdesc = load_purifier(spec.purifier)
    # recorded with every checkpoint and compared on resume (same purifier settings and weights)
    pur_record = {"purifier_config": json.loads(json.dumps(purifier.config())),
                  "purifier_digest": state_digest(purifier)}
    sampler = purifier.sampler().eval()
    for p in purifier.parameters():
        p.requires_grad_(False)
    need = FixedNoisePipeline(sampler, restorer).multiple
    if spec.patch % need:
        raise UsageError(f"--patch {spec.patch} is not a multiple of {need} (restorer and purifier sizes)",
                         f"use --patch {-(-spec.patch // need) * need}")
    config = {"arch": rdesc["arch"], "kwargs": rdesc["kwargs"]}
    opt = torch.optim.AdamW(restorer.parameters(), lr=spec.lr, weight_decay=1e-4, betas=(0.9, 0.99))
    start, resumed = 0, None
    history: list[dict] = []
    best: dict[str, Any] = {"psnr": -1.0}
    if spec.resume:  # before the data: a refusal is quick
        start, history, best, resumed = resume_run(out, restorer, opt, {**asdict(spec), **pur_record},
                                                   RESUME_MUST_MATCH)
    data = make_train_data(spec.data, spec.patch, spec.seed, spec.val_count, pool=spec.pool, progress=setup_progress)
    if not spec.resume:
        history = [{"step": 0, **(_validate(restorer, sampler, data.val, spec.seed) if info.is_main else {})}]
    before = {k: v for k, v in history[0].items() if k != "step"}
    ddp = D.wrap_model(restorer, info)
    t0 = time.perf_counter()
    elapsed_before = float(history[-1].get("seconds", 0.0))
    for step in range(start, spec.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec.lr, spec.warmup, spec.steps)
        rng = np.random.default_rng([spec.seed, step, info.rank])
        lq, gt = data.sampler.batch(rng, spec.batch)
        chunks = np.array_split(np.arange(spec.batch), len(spec.mix))
        xs = [_inputs(c, lq[idx], gt[idx], restorer, sampler, spec, int(rng.integers(2**62)))
              for c, idx in zip(spec.mix, chunks)]
        if reference is not None:
            with torch.no_grad():
                gt = reference(lq)
        restorer.train()
        loss = finetune_loss(ddp(torch.cat(xs)), gt, spec.ssim_weight, spec.fft_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(restorer.parameters(), 1.0)
        opt.step()
        progress(1, status=f"loss {loss.item():.4f}")
        if info.is_main and ((step + 1) % spec.val_every == 0 or step + 1 == spec.steps):
            m = _validate(restorer, sampler, data.val, spec.seed)
            m.update(step=step + 1, loss=float(loss.item()), seconds=elapsed_before + time.perf_counter() - t0)
            history.append(m)
            progress(0, status=f"val purified {m['psnr']:.2f} dB, clean {m['clean_psnr']:.2f} dB")
            training = {"spec": asdict(spec), "data": data.describe(), "step": step + 1,
                        "finetuned_from": rdesc.get("name", rdesc.get("path", spec.restorer)),
                        "purifier": pdesc.get("name", pdesc.get("path", spec.purifier)),
                        **pur_record}
            best = save_run(out, restorer, opt, config, m, best, history, training)
    report = FinetuneReport(out=str(out), steps=spec.steps, seconds=elapsed_before + time.perf_counter() - t0,
                            before=before, best=best, history=history)
    if info.is_main:
        write_json_atomic(out / "train_log.json", {"spec": asdict(spec), "data": data.describe(), **asdict(report),
                                                   "resumed": resumed, "torch": torch.__version__,
                                                   "threads": torch.get_num_threads()})
    D.finish(info)
    return report
