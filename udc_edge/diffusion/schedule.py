"""DDPM/DDIM schedule maths as plain tensor arithmetic (no diffusers scheduler at run time).

The DDPM linear schedule's cumulative alphas a_t (1000 steps, from diffusers'
``DDPMScheduler``), t* (a fraction of the schedule) <-> discrete timestep, the forward
diffusion q(x_t* | x) with an explicit noise tensor, and deterministic DDIM (eta = 0) back
to x_0 (diffusers' ``DDIMScheduler.step`` written out, not called). Coefficients are Python
floats, so a sampler built from them exports as one graph with no random op.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn

from udc_edge.core.errors import UsageError

TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


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


def schedule_list(schedule: torch.Tensor | list[float] | None) -> list[float]:
    """The cumulative alphas as Python floats (the default schedule if ``None``): graph constants."""
    if schedule is None:
        return _schedule(TRAIN_TIMESTEPS, BETA_START, BETA_END).tolist()
    return schedule if isinstance(schedule, list) else schedule.tolist()


def to_model(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] image -> the model domain [-1, 1]."""
    return x * 2.0 - 1.0


def from_model(z: torch.Tensor) -> torch.Tensor:
    """Model domain -> [0, 1] image (clipped)."""
    return ((z + 1.0) * 0.5).clamp(0.0, 1.0)


def diffuse(x: torch.Tensor, t_star: float, noise: torch.Tensor,
            schedule: torch.Tensor | list[float] | None = None) -> torch.Tensor:
    """q(x_t* | x) with the given noise: [0, 1] image in, model-domain ([-1, 1]) x_t* out."""
    if noise.shape != x.shape:
        raise UsageError(f"noise has shape {tuple(noise.shape)} but the image has {tuple(x.shape)}",
                         "draw the noise with the image's shape")
    a = schedule_list(schedule)[t_index(t_star)]
    return math.sqrt(a) * to_model(x) + math.sqrt(1.0 - a) * noise


def ddim_reverse(unet: nn.Module, z: torch.Tensor, t_star: float, steps: int,
                 schedule: torch.Tensor | list[float] | None = None, clip: bool = True) -> torch.Tensor:
    """Deterministic DDIM (eta 0) from x_t* to x_0 in ``steps`` network evaluations.

    Per step: x0 = (z - sqrt(1 - a_t) eps) / sqrt(a_t) (clipped to [-1, 1]), then
    z = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps; a_prev is 1 after the last step.
    """
    ab = schedule_list(schedule)
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
