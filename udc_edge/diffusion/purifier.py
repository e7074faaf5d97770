"""The diffusion purifier: a small DDPM (diffusers ``UNet2DModel``, epsilon prediction) and
its DiffPure-style sampler, written as plain tensor maths so it exports as one graph. This
module holds :class:`Purifier` (UNet + settings; the arch name checkpoints record) and its
save/load; the maths are in :mod:`.schedule`, the UNet builder in :mod:`.unet`, the sampler
in :mod:`.sampler`.

Purification of an image x in [0, 1] (mapped to the model domain [-1, 1] inside):

1. diffuse to t* with an *explicit* noise tensor: x_t* = sqrt(a_t*) x + sqrt(1 - a_t*) n
   (``diffuse``), a_t the DDPM linear schedule's cumulative alpha (1000 steps, from
   diffusers' ``DDPMScheduler``); t* is a fraction of the schedule (DiffPure: 0.1-0.15);
2. run DDIM (eta = 0, deterministic) from t* back to 0 in N steps (``ddim_reverse``; the
   update is diffusers' ``DDIMScheduler.step`` written out, not called).

:class:`PurifierSampler` is that whole computation as a pure function of
``(image, noise)``: timesteps and schedule coefficients are Python constants, there is
no random op, so torch, ONNX Runtime and TensorRT can be compared on the same noise.
The network has no attention and no fixed-size layer, so a purifier works fully
convolutionally at any resolution, not only the one it was trained at; H and W are padded
to a multiple of ``2**(levels - 1)`` (reflect, cropped back) by the shared helpers.

A :class:`Purifier` (UNet + its purification settings) is saved as an ordinary
checkpoint (``save_purifier``: safetensors + JSON config, arch
``udc_edge.diffusion.purifier:Purifier``), so ``udc-edge models`` lists shipped purifiers.
A *teacher* runs N steps; a *student* was distilled from a teacher to k steps at the
teacher's t* and refuses any other t*.

``average`` K > 1 purifies K times and averages (an ensemble over the diffusion noise,
which removes much of the variance the noise adds to a clean image). The K draws are
views of the ONE noise input: circular shifts of it by half and quarter the image size,
so every element of a view comes from a different, distant element of the input
(independent N(0, 1) values) and the graph keeps its ``(image, noise)`` signature. With
``steps = 1`` this is one-shot denoising (Carlini et al. 2023): the UNet's x0 prediction
at t*, no trajectory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch
from torch import nn

from udc_edge.core.errors import ModelError, UsageError
from udc_edge.diffusion.sampler import PurifierSampler, check_average
from udc_edge.diffusion.schedule import (
    alphas_cumprod,
    check_steps,
    check_t_star,
)
from udc_edge.diffusion.unet import build_unet, unet_config

PURIFIER_ARCH = "udc_edge.diffusion.purifier:Purifier"
DOMAINS = ("lq", "gt")
ROLES = ("teacher", "student")


def state_digest(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names and bytes): ties a student to its teacher."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Purifier(nn.Module):
    """A trained DDPM UNet and how to purify with it (t*, steps, draws averaged, domain, role).

    ``forward(x, noise)`` purifies with the configured t*, steps and average; ``sampler(t_star,
    steps, average)`` builds the exportable :class:`PurifierSampler` (a student accepts only its
    own t* and k). ``resolution`` is the training crop; any size works (convolutional).
    ``t_max`` is the top of the noise range the UNet was trained on: t* must not exceed it.
    """

    def __init__(self, unet: dict[str, Any] | None = None, t_star: float = 0.1, steps: int = 20,
                 resolution: int = 64, domain: str = "lq", role: str = "teacher", t_max: float = 0.3,
                 distillation: dict[str, Any] | None = None, average: int = 1):
        super().__init__()
        self.unet_cfg = unet_config(unet if unet is not None else "purifier-s")
        self.unet = build_unet(self.unet_cfg)
        self.t_star = check_t_star(t_star, "purifier t_star", ModelError)
        if not isinstance(t_max, (int, float)) or not 0.0 < float(t_max) <= 1.0:
            raise ModelError(f"purifier t_max={t_max!r} is outside (0, 1]", "it is a fraction of the schedule")
        self.t_max = float(t_max)
        self.steps = check_steps(steps, "purifier steps", ModelError)
        self.average = check_average(average, "purifier average", ModelError)
        if domain not in DOMAINS or role not in ROLES:
            raise ModelError(f"purifier domain={domain!r} / role={role!r} is invalid",
                             f"domain is one of {DOMAINS}, role one of {ROLES}")
        if self.t_star > self.t_max:
            raise ModelError(f"purifier t_star {self.t_star} exceeds the trained noise range t_max {self.t_max}")
        self.resolution, self.domain, self.role = int(resolution), domain, role
        self.distillation = dict(distillation or {})
        if role == "student":
            teacher_t = self.distillation.get("teacher_t_star")
            if teacher_t is None or abs(float(teacher_t) - self.t_star) > 1e-9:
                raise ModelError(f"student purifier has t* = {self.t_star} but its teacher's is {teacher_t}",
                                 "a student is only valid at its teacher's t*; distil it again")
        self.multiple = 2 ** (len(self.unet_cfg["block_out_channels"]) - 1)
        self.in_channels = 3
        self.register_buffer("alphas_cumprod", alphas_cumprod())

    def config(self) -> dict[str, Any]:
        """The constructor kwargs: what a checkpoint stores to rebuild this purifier."""
        return {"unet": self.unet_cfg, "t_star": self.t_star, "steps": self.steps,
                "resolution": self.resolution, "domain": self.domain, "role": self.role,
                "t_max": self.t_max, "distillation": self.distillation, "average": self.average}

    def sampler(self, t_star: float | None = None, steps: int | None = None, average: int | None = None
                ) -> PurifierSampler:
        t = self.t_star if t_star is None else check_t_star(t_star)
        k = self.steps if steps is None else check_steps(steps)
        avg = self.average if average is None else check_average(average)
        if self.role == "student" and (abs(t - self.t_star) > 1e-9 or k != self.steps):
            raise UsageError(f"this student was distilled for t* = {self.t_star}, {self.steps} step(s); "
                             f"asked for t* = {t}, {k} step(s)", "use its teacher, or distil a new student")
        if t > self.t_max + 1e-9:
            raise UsageError(f"t* = {t} is above the noise range the purifier was trained on ({self.t_max})",
                             f"use t* <= {self.t_max} or train with a larger --t-max")
        return PurifierSampler(self.unet, t, k, self.alphas_cumprod, average=avg)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            raise UsageError("the purifier needs a noise tensor (randomness is an explicit input)",
                             "call purifier(x, torch.randn_like(x, generator=...))")
        return self.sampler()(x, noise)


def save_purifier(out: str | os.PathLike, purifier: Purifier, extra: dict[str, Any] | None = None,
                  overwrite: bool = False):
    """Write a purifier checkpoint folder (model.safetensors + config.json)."""
    from udc_edge.models.checkpoint import save_checkpoint

    return save_checkpoint(out, purifier, {"arch": PURIFIER_ARCH, "kwargs": purifier.config()}, extra,
                           overwrite=overwrite)


def load_purifier(name: str | os.PathLike) -> tuple[Purifier, dict[str, Any]]:
    """A shipped purifier name, checkpoint folder, run folder or .safetensors file."""
    from udc_edge.models.zoo import load_model

    net, desc = load_model(str(name))
    if not isinstance(net, Purifier):
        raise ModelError(f"{name} is a {desc.get('arch')} model, not a diffusion purifier",
                         "give a checkpoint written by udc-edge train purifier or udc-edge distill")
    if not torch.allclose(net.alphas_cumprod, alphas_cumprod(), atol=1e-6):
        raise ModelError(f"purifier {name} was trained with another noise schedule",
                         "only the DDPM linear 1000-step schedule is supported")
    return net.eval(), desc


def check_pair(teacher: Purifier, student: Purifier, teacher_name: str = "teacher",
               student_name: str = "student") -> None:
    """Refuse a student that does not belong to ``teacher`` (t*, architecture, weights)."""
    if student.role != "student":
        raise ModelError(f"{student_name} is a teacher purifier, not a distilled student",
                         "give a checkpoint written by udc-edge distill")
    if abs(student.t_star - teacher.t_star) > 1e-9:
        raise ModelError(f"{student_name} was distilled at t* = {student.t_star} but {teacher_name} "
                         f"purifies at t* = {teacher.t_star}", "distil the student from this teacher")
    if student.unet_cfg != teacher.unet_cfg:
        raise ModelError(f"{student_name} and {teacher_name} have different UNet configs",
                         "these checkpoints do not belong together")
    digest = student.distillation.get("teacher_digest")
    if digest and digest != state_digest(teacher):
        raise ModelError(f"{student_name} was distilled from other teacher weights than {teacher_name}",
                         "give the teacher it was distilled from")
