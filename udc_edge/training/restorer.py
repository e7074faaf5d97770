"""Train a restorer (a :class:`~udc_edge.training.trainer.Trainer`): random crops, Charbonnier + FFT loss,
AdamW, cosine schedule, validation PSNR/SSIM every K steps, best and last checkpoints, resume, torchrun DDP.

Output folder::

    OUT/best/        checkpoint with the highest validation PSNR (model.safetensors + config.json)
    OUT/last/        checkpoint at the last validation
    OUT/state.safetensors   optimizer/scheduler state and step, for --resume
    OUT/train_log.json      the one log format (see ``udc_edge.training.trainer``)

Under ``torchrun --nproc_per_node N`` each rank draws its own batches (seeded by rank),
gradients are averaged by DDP, rank 0 validates and writes. The effective batch is
``batch * N``. On CPU a run is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from udc_edge.core.errors import UsageError
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
from udc_edge.training.losses import restoration_loss
from udc_edge.training.pairs import TrainData
from udc_edge.training.state import options
from udc_edge.training.trainer import LoopSpec, Trainer, check_loop_options, to_device

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
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "patch", "val_every", "val_count", "pool"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.pixel_loss not in ("charbonnier", "l1", "l2"):
            raise UsageError(f"--loss must be charbonnier, l1 or l2, got {self.pixel_loss!r}")
        check_loop_options(self)


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


@torch.no_grad()
def evaluate_pairs(model: torch.nn.Module, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Mean PSNR/SSIM of the model's output and of the input, against ground truth (the
    model may sit on any device; the images are HWC arrays)."""
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    out_p, out_s, in_p, in_s = [], [], [], []
    for lq, gt in pairs:
        y = to_hwc(run_padded(model, to_nchw(lq).to(device)).clamp(0, 1).cpu())
        out_p.append(psnr(y, gt))
        out_s.append(ssim(y, gt))
        in_p.append(psnr(lq, gt))
        in_s.append(ssim(lq, gt))
    return {"psnr": float(np.mean(out_p)), "ssim": float(np.mean(out_s)),
            "input_psnr": float(np.mean(in_p)), "input_ssim": float(np.mean(in_s))}


class RestorerTrainer(Trainer):
    """Restorer hooks: charbonnier/L1/L2 + FFT loss on pairs; best/ by validation PSNR."""

    kind, metric, higher_is_better = "restorer", "psnr", True
    must_match = RESUME_MUST_MATCH

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        spec = self.spec
        if spec.arch.endswith(".safetensors") or Path(spec.arch).is_dir():
            model, config = load_checkpoint(spec.arch)  # fine-tune from a checkpoint
            self.config = {"arch": config["arch"], "kwargs": config["kwargs"]}
        else:
            self.config = model_config(spec.arch) if ":" not in spec.arch else {"arch": spec.arch, "kwargs": {}}
            self.config["kwargs"].update(spec.arch_kwargs)
            model = build(self.config["arch"], self.config["kwargs"])
        model = model.to(self.device)
        return model, model

    def loss(self, batch: Any, net: torch.nn.Module) -> torch.Tensor:
        lq, gt = to_device(self.device, *batch[:2])
        return restoration_loss(net(lq), gt, self.spec.pixel_loss, self.spec.fft_weight)

    def prepare(self, data: TrainData) -> None:
        self.val = data.val

    def validate(self) -> dict[str, float]:
        return evaluate_pairs(self.model, self.val)

    def status(self, m: dict[str, Any]) -> str:
        return f"val {m['psnr']:.2f} dB (input {m['input_psnr']:.2f})"

    def save_model(self, folder: Path, extra: dict[str, Any]) -> None:
        save_checkpoint(folder, self.model, self.config, extra, overwrite=True)


def train_restorer(spec: TrainSpec, progress: Advance = noop, setup_progress: Advance = noop) -> TrainReport:
    """Run the training described by ``spec``; returns the report (rank 0's view)."""
    trainer = RestorerTrainer(spec, LoopSpec.of(spec), progress, setup_progress)
    r = trainer.run()
    best = r.best
    report = TrainReport(
        out=r.out, steps=r.steps, seconds=r.seconds, best_psnr=best.get("psnr", -1.0),
        best_ssim=best.get("ssim", 0.0), input_psnr=best.get("input_psnr", 0.0),
        input_ssim=best.get("input_ssim", 0.0), history=r.history, ranks=r.ranks,
        ranks_identical=r.ranks_identical if trainer.info.enabled else None,
    )
    trainer.write_log(report)
    return report
