"""Train a restorer: random crops, Charbonnier + FFT loss, AdamW, cosine schedule,
validation PSNR/SSIM every K steps, best and last checkpoints, resume, torchrun DDP.

Output folder::

    OUT/best/        checkpoint with the highest validation PSNR (model.safetensors + config.json)
    OUT/last/        checkpoint at the last validation
    OUT/state.safetensors   optimizer/scheduler state and step, for --resume
    OUT/train_log.json      spec, data, history, timings, DDP weight digests

Under ``torchrun --nproc_per_node N`` each rank draws its own batches (seeded by rank),
gradients are averaged by DDP, rank 0 validates and writes. The effective batch is
``batch * N``. On CPU a run is deterministic for a seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from udc_edge.core.errors import OutputError, UsageError
from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.metrics import psnr, ssim
from udc_edge.core.progress import Advance, noop
from udc_edge.data.images import to_hwc, to_nchw
from udc_edge.models import (
    build,
    load_checkpoint,
    model_config,
    run_padded,
    save_checkpoint,
)
from udc_edge.training import distributed as D
from udc_edge.training.losses import restoration_loss
from udc_edge.training.pairs import make_train_data
from udc_edge.training.state import STATE_NAME, options, resume_run, save_train_state

#: Spec fields a resumed run must share with the interrupted one (lr, steps, ... may change).
RESUME_MUST_MATCH = options("arch", "arch_kwargs", "data", "batch", "patch", "seed", "pool", "val_count",
                            pixel_loss="--loss")


@dataclass(frozen=True)
class TrainSpec:
    """A restorer training run (validated on construction)."""

    arch: str = "unet-s"
    data: str = "synth:poled"
    out: str = "runs/restorer"
    steps: int = 2000
    batch: int = 8
    patch: int = 96
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    pixel_loss: str = "charbonnier"
    fft_weight: float = 0.05
    val_every: int = 250
    val_count: int = 8
    seed: int = 0
    arch_kwargs: dict = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False
    threads: int = 0  # 0: torch default
    pool: int = 192  # clean crops kept for synthetic data

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "patch", "val_every", "val_count", "pool"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.pixel_loss not in ("charbonnier", "l1", "l2"):
            raise UsageError(f"--loss must be charbonnier, l1 or l2, got {self.pixel_loss!r}")
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other", "pick one")


@dataclass
class TrainReport:
    out: str
    steps: int
    seconds: float
    best_psnr: float
    best_ssim: float
    input_psnr: float
    input_ssim: float
    history: list[dict]
    ranks: int = 1
    ranks_identical: bool | None = None

    def summary(self) -> str:
        return (f"trained {self.steps} steps in {self.seconds:.0f} s: validation PSNR {self.best_psnr:.2f} dB "
                f"(input {self.input_psnr:.2f} dB, +{self.best_psnr - self.input_psnr:.2f} dB), "
                f"SSIM {self.best_ssim:.4f} (input {self.input_ssim:.4f}); best checkpoint in {self.out}/best")


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Every trainer's schedule: linear warm-up over ``warmup`` steps, then cosine decay to
    1 % of ``peak`` at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean PSNR/SSIM of the model's output and of the input, against ground truth."""
    model.eval()
    out_p, out_s, in_p, in_s = [], [], [], []
    for lq, gt in pairs:
        y = to_hwc(run_padded(model, to_nchw(lq)).clamp(0, 1))
        out_p.append(psnr(y, gt))
        out_s.append(ssim(y, gt))
        in_p.append(psnr(lq, gt))
        in_s.append(ssim(lq, gt))
    return {"psnr": float(np.mean(out_p)), "ssim": float(np.mean(out_s)),
            "input_psnr": float(np.mean(in_p)), "input_ssim": float(np.mean(in_s))}


def prepare_out_dir(out: str | Path, resume: bool, overwrite: bool, info: D.DistInfo) -> Path:
    """A run folder: refused when it holds files, unless resuming or overwriting (rank 0 checks)."""
    out = Path(out)
    if info.is_main and not resume and out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"output folder {out} exists and is not empty", "pass --resume to continue or --overwrite")
    return out


def save_run(out: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, config: dict, m: dict,
          best: dict, history: list[dict], training: dict) -> dict:
    """Write last/ (and best/ when ``m`` beats ``best``) plus the resumable state."""
    extra = {"training": training, "metrics": m}
    if m["psnr"] > best["psnr"]:
        best = m
        save_checkpoint(out / "best", model, config, extra, overwrite=True)
    save_checkpoint(out / "last", model, config, extra, overwrite=True)
    save_train_state(out / STATE_NAME, opt, training["step"], history, best)
    return best


def train_restorer(spec: TrainSpec, progress: Advance = noop, setup_progress: Advance = noop) -> TrainReport:
    """Run the training described by ``spec``; returns the report (rank 0's view)."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    info = D.init_distributed("cpu")
    out = prepare_out_dir(spec.out, spec.resume, spec.overwrite, info)
    torch.manual_seed(spec.seed)  # identical initial weights on every rank
    if spec.arch.endswith(".safetensors") or Path(spec.arch).is_dir():
        model, config = load_checkpoint(spec.arch)  # fine-tune from a checkpoint
        config = {"arch": config["arch"], "kwargs": config["kwargs"]}
    else:
        config = model_config(spec.arch) if ":" not in spec.arch else {"arch": spec.arch, "kwargs": {}}
        config["kwargs"].update(spec.arch_kwargs)
        model = build(config["arch"], config["kwargs"])
    data = make_train_data(spec.data, spec.patch, spec.seed, spec.val_count, pool=spec.pool,
                           progress=setup_progress)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay, betas=(0.9, 0.99))
    start, history, best = 0, [], {"psnr": -1.0}
    resumed = None
    if spec.resume:
        start, history, best, resumed = resume_run(out, model, opt, asdict(spec), RESUME_MUST_MATCH)
    ddp = D.wrap_model(model, info)
    t0 = time.perf_counter()
    elapsed_before = float(history[-1]["seconds"]) if history else 0.0
    for step in range(start, spec.steps):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec.lr, spec.warmup, spec.steps)
        lq, gt = data.sampler.batch(np.random.default_rng([spec.seed, step, info.rank]), spec.batch)
        loss = restoration_loss(ddp(lq), gt, spec.pixel_loss, spec.fft_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        progress(1, status=f"loss {loss.item():.4f}")
        last = step + 1 == spec.steps
        if info.is_main and ((step + 1) % spec.val_every == 0 or last):
            m = evaluate_pairs(model, data.val)
            m.update(step=step + 1, loss=float(loss.item()), seconds=elapsed_before + time.perf_counter() - t0)
            history.append(m)
            progress(0, status=f"val {m['psnr']:.2f} dB (input {m['input_psnr']:.2f})")
            best = save_run(out, model, opt, config, m, best, history,
                         {"spec": asdict(spec), "data": data.describe(), "step": step + 1})
    digests = D.gather_strings(D.weights_digest(model), info)
    report = TrainReport(
        out=str(out), steps=spec.steps, seconds=elapsed_before + time.perf_counter() - t0,
        best_psnr=best["psnr"], best_ssim=best.get("ssim", 0.0), input_psnr=best.get("input_psnr", 0.0),
        input_ssim=best.get("input_ssim", 0.0), history=history, ranks=info.world_size,
        ranks_identical=len(set(digests)) == 1 if info.enabled else None,
    )
    if info.is_main:
        log: dict[str, Any] = {"spec": asdict(spec), "data": data.describe(), **asdict(report), "resumed": resumed,
                               "weights_digests": digests, "torch": torch.__version__, "threads": torch.get_num_threads()}
        write_json_atomic(out / "train_log.json", log)
    D.finish(info)
    return report

