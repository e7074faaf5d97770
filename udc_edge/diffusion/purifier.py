"""The diffusion purifier: a small DDPM (diffusers ``UNet2DModel``, epsilon prediction) and
its DiffPure-style sampler, written as plain tensor maths so it exports as one graph.

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

import functools
import hashlib
import math
import os
from typing import Any

import torch
from torch import nn

from udc_edge.core.errors import ModelError, UsageError
from udc_edge.models.padding import crop, pad_to_multiple

PURIFIER_ARCH = "udc_edge.diffusion.purifier:Purifier"
TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
DOMAINS = ("lq", "gt")
ROLES = ("teacher", "student")
#: Most noise draws one purification can average (8 shifted views of the noise input).
MAX_AVERAGE = 8
#: UNet presets: ``purifier-t`` for tests, ``purifier-s`` for the shipped weights.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "purifier-t": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
    "purifier-s": {"block_out_channels": [16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8},
}


def check_t_star(t_star: Any, what: str = "--t-star", error: type = UsageError) -> float:
    """t* must be a fraction in (0, 1) of the 1000-step schedule."""
    ok = isinstance(t_star, (int, float)) and not isinstance(t_star, bool) and math.isfinite(t_star)
    if not ok or not 0.0 < float(t_star) < 1.0:
        raise error(f"{what} = {t_star!r} is outside (0, 1)",
                    "t* is a fraction of the 1000-step schedule; DiffPure uses 0.1-0.15")
    return float(t_star)


def check_steps(steps: Any, what: str = "--steps", error: type = UsageError) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise error(f"{what} = {steps!r} must be an integer >= 1", "use 1 or more sampling steps")
    return steps


def check_average(average: Any, what: str = "--average", error: type = UsageError) -> int:
    if isinstance(average, bool) or not isinstance(average, int) or not 1 <= average <= MAX_AVERAGE:
        raise error(f"{what} {average!r} is invalid", f"average 1 to {MAX_AVERAGE} noise draws")
    return average


#: Circular shifts of the noise, in quarters of (H, W), that make the averaged draws: half
#: shifts first (every pixel's draws come from points H/2 or W/2 apart), then quarter ones.
_VIEW_SHIFTS = ((0, 0), (2, 0), (0, 2), (2, 2), (1, 1), (3, 1), (1, 3), (3, 3))


def _shift(noise: torch.Tensor, qy: int, qx: int) -> torch.Tensor:
    """Roll by (qy H/4, qx W/4), with the offsets computed from the tensor's shape, so an
    exported graph rolls by the run-time size (slices + concat, no constant shift)."""
    h, w = noise.shape[-2], noise.shape[-1]
    if qy:
        dy = (h * qy) // 4
        noise = torch.cat([noise[..., dy:, :], noise[..., :dy, :]], -2)
    if qx:
        dx = (w * qx) // 4
        noise = torch.cat([noise[..., dx:], noise[..., :dx]], -1)
    return noise


def noise_views(noise: torch.Tensor, count: int) -> list[torch.Tensor]:
    """``count`` (<= 8) noise tensors made from one by circular shifts of half and quarter
    the image size. For H, W >= 4, every element of a view comes from a different element
    of ``noise`` than the same element of any other view (independent N(0, 1) values), and
    from one far away (>= H/4 or W/4), so the purifier's outputs for the views are nearly
    independent too wherever its receptive field is smaller than that."""
    return [_shift(noise, qy, qx) for qy, qx in _VIEW_SHIFTS[: check_average(count, "noise views")]]


def t_index(t_star: float, timesteps: int = TRAIN_TIMESTEPS) -> int:
    """The discrete timestep of fraction ``t_star`` (0.1 -> 99: a_t after 100 noising steps)."""
    return max(0, round(t_star * timesteps) - 1)


def ddim_timesteps(t_star: float, steps: int, timesteps: int = TRAIN_TIMESTEPS) -> list[int]:
    """The N timesteps DDIM evaluates, from t* down, evenly spaced; the step after the last
    goes to x_0 (alpha 1). Refuses more steps than there are timesteps below t*."""
    top = t_index(t_star, timesteps)
    if steps > top + 1:
        raise UsageError(f"{steps} DDIM steps do not fit below t* = {t_star} ({top + 1} timesteps)",
                         f"use at most {top + 1} steps, or a larger t*")
    return [top - (i * (top + 1)) // steps for i in range(steps)]


@functools.lru_cache(maxsize=4)
def _schedule(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="linear",
                          beta_start=beta_start, beta_end=beta_end)
    return sched.alphas_cumprod.to(torch.float32).clone()


def alphas_cumprod() -> torch.Tensor:
    """The DDPM linear schedule's cumulative alphas (a copy, 1000 values)."""
    return _schedule(TRAIN_TIMESTEPS, BETA_START, BETA_END).clone()


def _ab(schedule: torch.Tensor | list[float] | None) -> list[float]:
    if schedule is None:
        return _schedule(TRAIN_TIMESTEPS, BETA_START, BETA_END).tolist()
    return schedule if isinstance(schedule, list) else schedule.tolist()


def to_model(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def from_model(z: torch.Tensor) -> torch.Tensor:
    return ((z + 1.0) * 0.5).clamp(0.0, 1.0)


def diffuse(x: torch.Tensor, t_star: float, noise: torch.Tensor,
            schedule: torch.Tensor | list[float] | None = None) -> torch.Tensor:
    """q(x_t* | x) with the given noise: [0, 1] image in, model-domain ([-1, 1]) x_t* out."""
    if noise.shape != x.shape:
        raise UsageError(f"noise has shape {tuple(noise.shape)} but the image has {tuple(x.shape)}",
                         "draw the noise with the image's shape")
    a = _ab(schedule)[t_index(t_star)]
    return math.sqrt(a) * to_model(x) + math.sqrt(1.0 - a) * noise


def ddim_reverse(unet: nn.Module, z: torch.Tensor, t_star: float, steps: int,
                 schedule: torch.Tensor | list[float] | None = None, clip: bool = True) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from x_t* to x_0 in ``steps`` network evaluations.

    Per step: x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t) (clipped to [-1, 1]), then
    z = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps; a_prev is 1 after the last step.
    """
    ab = _ab(schedule)
    taus = ddim_timesteps(t_star, check_steps(steps))
    for i, t in enumerate(taus):
        a_t = ab[t]
        a_prev = ab[taus[i + 1]] if i + 1 < len(taus) else 1.0
        eps = unet(z, t, return_dict=False)[0]
        x0 = (z - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        z = x0 if a_prev == 1.0 else math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
    return z


def build_unet(cfg: dict[str, Any]) -> nn.Module:
    """A diffusers ``UNet2DModel`` with plain Down/UpBlock2D and no attention anywhere."""
    from diffusers import UNet2DModel

    channels = list(cfg.get("block_out_channels", ()))
    groups = cfg.get("norm_num_groups", 8)
    layers = cfg.get("layers_per_block", 1)
    unknown = set(cfg) - {"block_out_channels", "layers_per_block", "norm_num_groups"}
    if unknown:
        raise ModelError(f"purifier unet config has unknown keys {sorted(unknown)}",
                         "use block_out_channels, layers_per_block, norm_num_groups")
    if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ModelError(f"purifier unet block_out_channels={channels!r} is invalid",
                         "give a list of positive channel counts, e.g. [16, 32, 32]")
    if not isinstance(groups, int) or groups < 1 or any(c % groups for c in channels):
        raise ModelError(f"purifier unet norm_num_groups={groups!r} does not divide every channel count "
                         f"{channels}", "pick a group count that divides them all")
    if not isinstance(layers, int) or layers < 1:
        raise ModelError(f"purifier unet layers_per_block={layers!r} is invalid", "use an integer >= 1")
    n = len(channels)
    return UNet2DModel(in_channels=3, out_channels=3, block_out_channels=tuple(channels),
                       layers_per_block=layers, norm_num_groups=groups,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       add_attention=False)


def unet_config(preset_or_json: str | dict[str, Any]) -> dict[str, Any]:
    """A UNet preset name (``purifier-t``/``purifier-s``) or an explicit config dict."""
    if isinstance(preset_or_json, dict):
        return dict(preset_or_json)
    if preset_or_json not in UNET_PRESETS:
        raise UsageError(f"unknown purifier preset {preset_or_json!r}",
                         f"use {' or '.join(UNET_PRESETS)}, or give --unet-kwargs JSON")
    return {k: list(v) if isinstance(v, list) else v for k, v in UNET_PRESETS[preset_or_json].items()}


class PurifierSampler(nn.Module):
    """``forward(x, noise) -> purified x``: diffuse to t*, DDIM back in ``steps`` steps.

    A pure function of its two inputs (same shape, NCHW in [0, 1] and N(0, 1) noise), with
    timesteps baked in as constants: it exports to ONE ONNX graph. In torch, sizes that are
    not a multiple of :attr:`multiple` are padded and cropped back; an exported graph is
    traced at a multiple and needs multiples.
    """

    def __init__(self, unet: nn.Module, t_star: float, steps: int, schedule: torch.Tensor, clip: bool = True,
                 average: int = 1):
        super().__init__()
        self.unet = unet
        self.t_star = check_t_star(t_star)
        self.steps = check_steps(steps)
        self.average = check_average(average)
        self.timesteps = ddim_timesteps(self.t_star, self.steps)
        self.schedule = _ab(schedule)
        self.clip = clip
        self.multiple = 2 ** (len(unet.config.block_out_channels) - 1)

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if noise.shape != x.shape:
            raise UsageError(f"noise has shape {tuple(noise.shape)} but the image has {tuple(x.shape)}",
                             "draw the noise with the image's shape")
        xp, size = pad_to_multiple(x, self.multiple)
        # views of the unpadded noise, each padded like the image: inside the image every
        # element of a view comes from its own noise element
        views = noise_views(noise, self.average) if self.average > 1 else [noise]
        z = torch.cat([diffuse(xp, self.t_star, pad_to_multiple(v, self.multiple)[0], self.schedule) for v in views])
        z = ddim_reverse(self.unet, z, self.t_star, self.steps, self.schedule, self.clip)
        out = from_model(z)
        if self.average > 1:
            out = out.unflatten(0, (self.average, -1)).mean(0)
        return crop(out, size)


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
