"""Train the diffusion purifier: DDPM epsilon prediction on the restorer's input domain.

Images are the degraded side (``lq``) of the training pairs (synthetic ``synth:poled`` or
a paired folder), or the clean side with ``domain="gt"``. Each step draws a batch, a
timestep t uniformly below ``t_max`` (purification only ever starts at t* <= 0.15, so the
network's capacity goes to the noise levels it will see) and noise n, and minimises
||eps(sqrt(a_t) x + sqrt(1 - a_t) n, t) - n||^2. Validation is the same loss on fixed
images, timesteps and noise (deterministic), so ``best/`` is the lowest validation loss.

Output folder (the one :class:`~udc_edge.training.trainer.Trainer`'s)::

    OUT/best/  OUT/last/        purifier checkpoints (model.safetensors + config.json)
    OUT/state.safetensors       optimizer state, step, history (for --resume)
    OUT/train_log.json          the one log format (see ``udc_edge.training.trainer``)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from udc_edge.core.errors import UsageError
from udc_edge.core.progress import Advance, noop
from udc_edge.diffusion.purifier import DOMAINS, Purifier, save_purifier
from udc_edge.diffusion.schedule import TRAIN_TIMESTEPS, check_steps, check_t_star, to_model
from udc_edge.diffusion.unet import unet_config
from udc_edge.training.pairs import TrainData
from udc_edge.training.state import options
from udc_edge.training.trainer import LoopSpec, Trainer, check_loop_options, to_device

#: Spec fields a resumed run must share with the interrupted one (lr, steps, ... may change).
RESUME_MUST_MATCH = options("data", "domain", "unet", "unet_kwargs", "batch", "patch", "t_max", "seed", "pool",
                            "val_count")


@dataclass(frozen=True)
class PurifierTrainSpec:
    """A purifier training run (validated on construction)."""

    data: str = "synth:poled"
    out: str = "runs/purifier"
    domain: str = "lq"
    unet: str = "purifier-s"
    unet_kwargs: dict = field(default_factory=dict)
    steps: int = 4000
    batch: int = 8
    patch: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100
    t_max: float = 0.2
    t_star: float = 0.1
    sample_steps: int = 50
    val_every: int = 500
    val_count: int = 8
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    threads: int = 0
    pool: int = 192
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "patch", "val_every", "val_count", "pool", "warmup"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.domain not in DOMAINS:
            raise UsageError(f"--domain must be lq (degraded inputs) or gt (clean), got {self.domain!r}")
        check_t_star(self.t_star)
        if not 0.0 < self.t_max <= 1.0:
            raise UsageError(f"--t-max must be in (0, 1], got {self.t_max}", "0.2 covers DiffPure's t* range")
        if self.t_star > self.t_max:
            raise UsageError(f"--t-star {self.t_star} is above --t-max {self.t_max}",
                             "the purifier cannot start from a noise level it never saw")
        check_steps(self.sample_steps, "--sample-steps")
        check_loop_options(self)

    def purifier_kwargs(self) -> dict[str, Any]:
        cfg = unet_config(self.unet)
        cfg.update(self.unet_kwargs)
        return {"unet": cfg, "t_star": self.t_star, "steps": self.sample_steps, "resolution": self.patch,
                "domain": self.domain, "role": "teacher", "t_max": self.t_max}


@dataclass
class PurifierTrainReport:
    out: str
    steps: int
    seconds: float
    best_val_loss: float
    history: list[dict]
    ranks: int = 1

    def summary(self) -> str:
        return (f"trained {self.steps} steps in {self.seconds:.0f} s: best validation denoising loss "
                f"{self.best_val_loss:.5f}; purifier in {self.out}/best")


def domain_batch(pair: tuple[torch.Tensor, torch.Tensor], domain: str) -> torch.Tensor:
    """The side of a (lq, gt) batch the purifier models."""
    return pair[0] if domain == "lq" else pair[1]


def denoising_loss(purifier: Purifier, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   unet: torch.nn.Module | None = None) -> torch.Tensor:
    """Epsilon-prediction MSE at timesteps ``t`` (one per image) with the given noise."""
    a = purifier.alphas_cumprod[t].view(-1, 1, 1, 1)
    z = a.sqrt() * to_model(x) + (1 - a).sqrt() * noise
    net = unet if unet is not None else purifier.unet
    return F.mse_loss(net(z, t, return_dict=False)[0], noise)


class _ValSet:
    """Fixed validation images (center crops), timesteps and noise: a deterministic loss.

    The noise is drawn on the CPU (the same on any device), then everything moves to
    ``device`` once, so validations copy nothing.
    """

    def __init__(self, images: list[np.ndarray], patch: int, t_top: int, seed: int, device: str = "cpu"):
        crops = []
        for img in images:
            h, w = img.shape[:2]
            y, x = (h - patch) // 2, (w - patch) // 2
            crops.append(img[y : y + patch, x : x + patch].transpose(2, 0, 1))
        self.x = torch.from_numpy(np.ascontiguousarray(np.stack(crops)))
        g = torch.Generator().manual_seed(seed + 31)
        reps = 4  # four noise levels per image, spread over the trained range
        self.x = self.x.repeat(reps, 1, 1, 1)
        self.t = torch.linspace(0, t_top - 1, reps * len(crops)).round().long()
        self.noise = torch.randn(self.x.shape, generator=g)
        self.x, self.t, self.noise = (v.to(device) for v in (self.x, self.t, self.noise))

    @torch.no_grad()
    def loss(self, purifier: Purifier) -> float:
        purifier.eval()
        x, t, noise = self.x, self.t, self.noise
        losses = [denoising_loss(purifier, x[i : i + 8], t[i : i + 8], noise[i : i + 8]).item()
                  * len(x[i : i + 8]) for i in range(0, len(x), 8)]
        return float(sum(losses) / len(self.x))


class PurifierTrainer(Trainer):
    """Purifier hooks: DDPM epsilon-prediction loss; best/ by the lowest validation loss."""

    kind, metric, higher_is_better = "purifier", "val_loss", False
    must_match = RESUME_MUST_MATCH

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        self.purifier = Purifier(**self.spec.purifier_kwargs()).to(self.device)
        return self.purifier, self.purifier.unet

    def prepare(self, data: TrainData) -> None:
        spec = self.spec
        self.t_top = max(1, round(spec.t_max * TRAIN_TIMESTEPS))
        self.val = _ValSet([p[0] if spec.domain == "lq" else p[1] for p in data.val], spec.patch, self.t_top,
                           spec.seed, self.device)

    def loss(self, batch: Any, net: torch.nn.Module) -> torch.Tensor:
        lq, gt, rng = batch
        x = domain_batch((lq, gt), self.spec.domain)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))  # on the CPU: same draws on any device
        t = torch.randint(0, self.t_top, (self.spec.batch,), generator=gen)
        noise = torch.randn(x.shape, generator=gen)
        x, t, noise = to_device(self.device, x, t, noise)
        return denoising_loss(self.purifier, x, t, noise, net)

    def validate(self) -> dict[str, float]:
        return {"val_loss": self.val.loss(self.purifier)}

    def status(self, m: dict[str, Any]) -> str:
        return f"val loss {m['val_loss']:.4f}"

    def save_model(self, folder: Path, extra: dict[str, Any]) -> None:
        save_purifier(folder, self.purifier, extra, overwrite=True)


def train_purifier(spec: PurifierTrainSpec, progress: Advance = noop, setup_progress: Advance = noop
                   ) -> PurifierTrainReport:
    """Run the purifier training described by ``spec`` (single process or torchrun DDP)."""
    trainer = PurifierTrainer(spec, LoopSpec.of(spec), progress, setup_progress)
    r = trainer.run()
    report = PurifierTrainReport(out=r.out, steps=r.steps, seconds=r.seconds,
                                 best_val_loss=float(r.best.get("val_loss", float("inf"))), history=r.history,
                                 ranks=r.ranks)
    trainer.write_log(report)
    return report
