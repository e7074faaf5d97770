"""A UDC-UNet-style encoder-decoder restorer.

Plain 3x3 convolutions and ReLU/LeakyReLU only (no normalisation layers), so it quantises
to INT8 without surprises and exports to any ONNX runtime. Strided 2x2 convolutions
downsample, transposed convolutions or pixel shuffles upsample, skips are added or
concatenated, and a global residual makes the network predict the correction:
``output = input + net(input)``. Inputs must be a multiple of ``2**depth`` in H and W
(use :func:`udc_edge.models.padding.run_padded` for other sizes).
"""

from __future__ import annotations

import torch
from torch import nn

from udc_edge.core.errors import ModelError

ACTS = ("relu", "leaky")
UPS = ("transpose", "shuffle")
SKIPS = ("add", "concat")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelError(
            f"unet: {name}={value!r} is not supported",
            f"use one of {', '.join(choices)}",
        )


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ModelError(f"unet: {name}={value!r} is invalid", f"use an integer >= {minimum}")


def make_act(act: str) -> nn.Module:
    """The activation by name: ``relu`` or ``leaky`` (LeakyReLU, slope 0.2)."""
    return nn.ReLU(inplace=False) if act == "relu" else nn.LeakyReLU(0.2, inplace=False)


class ResBlock(nn.Module):
    """conv3x3 -> act -> conv3x3 with a local residual; no norm, INT8-friendly."""

    def __init__(self, ch: int, act: str):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.act = make_act(act)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def _stage(ch: int, blocks: int, act: str) -> nn.Module:
    return nn.Sequential(*(ResBlock(ch, act) for _ in range(blocks)))


def _upsample(cin: int, cout: int, up: str) -> nn.Module:
    if up == "transpose":
        return nn.ConvTranspose2d(cin, cout, 2, stride=2)
    return nn.Sequential(nn.Conv2d(cin, cout * 4, 1), nn.PixelShuffle(2))


class UNet(nn.Module):
    """Encoder-decoder restorer with skips and a global residual.

    Args:
        in_ch: image channels (3 for RGB); the output has the same count.
        width: channels at full resolution; doubled at every level.
        depth: number of 2x down/up-sampling levels (input multiple is ``2**depth``).
        blocks: residual blocks per level (and in the bottleneck).
        act: ``relu`` or ``leaky``.
        up: ``transpose`` (ConvTranspose2d) or ``shuffle`` (1x1 conv + PixelShuffle).
        skip: ``add`` (cheap) or ``concat`` (followed by a 1x1 conv).
    """

    def __init__(
        self,
        in_ch: int = 3,
        width: int = 16,
        depth: int = 3,
        blocks: int = 1,
        act: str = "relu",
        up: str = "transpose",
        skip: str = "add",
    ):
        super().__init__()
        _check_int("in_ch", in_ch, 1)
        _check_int("width", width, 1)
        _check_int("depth", depth, 0)
        _check_int("blocks", blocks, 0)
        _check_choice("act", act, ACTS)
        _check_choice("up", up, UPS)
        _check_choice("skip", skip, SKIPS)
        self.in_channels = in_ch
        self.multiple = 2**depth
        self.skip = skip

        self.head = nn.Conv2d(in_ch, width, 3, padding=1)
        self.head_act = make_act(act)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = width
        for _ in range(depth):
            self.encoders.append(_stage(ch, blocks, act))
            self.downs.append(nn.Sequential(nn.Conv2d(ch, ch * 2, 2, stride=2), make_act(act)))
            ch *= 2
        self.middle = _stage(ch, blocks, act)
        self.ups = nn.ModuleList()
        self.merges = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for _ in range(depth):
            self.ups.append(_upsample(ch, ch // 2, up))
            ch //= 2
            if skip == "concat":
                self.merges.append(nn.Sequential(nn.Conv2d(ch * 2, ch, 1), make_act(act)))
            else:
                self.merges.append(nn.Identity())
            self.decoders.append(_stage(ch, blocks, act))
        self.tail = nn.Conv2d(width, in_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head_act(self.head(x))
        skips = []
        for enc, down in zip(self.encoders, self.downs, strict=True):
            f = enc(f)
            skips.append(f)
            f = down(f)
        f = self.middle(f)
        for up, merge, dec, s in zip(self.ups, self.merges, self.decoders, reversed(skips), strict=True):
            f = up(f)
            f = merge(torch.cat([f, s], dim=1)) if self.skip == "concat" else f + s
            f = dec(f)
        return x + self.tail(f)
