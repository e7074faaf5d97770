"""The exportable purification sampler: diffuse to t*, DDIM back in k steps, optionally
averaged over K shifted views of the one noise input (see :mod:`udc_edge.diffusion.purifier`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from udc_edge.core.errors import UsageError
from udc_edge.diffusion.schedule import (
    check_steps,
    check_t_star,
    ddim_reverse,
    ddim_timesteps,
    diffuse,
    from_model,
    schedule_list,
)
from udc_edge.models.padding import crop, pad_to_multiple

#: Most noise draws one purification can average (8 shifted views of the noise input).
MAX_AVERAGE = 8


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
        self.schedule = schedule_list(schedule)
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
