"""A NAFNet-style restorer (Chen et al., "Simple Baselines for Image Restoration", 2022).

Nonlinear-activation-free blocks: LayerNorm over channels, a depthwise conv, SimpleGate
(split the channels in two and multiply the halves) and simplified channel attention,
in two residual branches scaled by learned ``beta``/``gamma`` (zero at init, as in the
paper, so every block starts as the identity). It is the modern strong baseline and a
hard case for INT8 (the gates multiply activations). Everything is written with plain
tensor ops so ``torch.onnx.export`` handles it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from udc_edge.core.errors import ModelError


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of an NCHW tensor (plain mean/var ops, ONNX-friendly)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(dim=1, keepdim=True)
        y = xc / torch.sqrt(var + self.eps)
        return y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split channels into two halves and multiply them (the activation of NAFNet)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block: a spatial branch (dwconv, gate, SCA) and a channel FFN branch."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw = c * dw_expand
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        ffn = c * ffn_expand
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.gate(self.conv2(self.conv1(self.norm1(inp))))
        x = self.conv3(x * self.sca(x))
        y = inp + x * self.beta
        x = self.conv5(self.gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma


def _blocks(c: int, n: int) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(c) for _ in range(n)))


def _check_counts(name: str, value: Sequence[int]) -> list[int]:
    try:
        counts = [int(v) for v in value]
    except (TypeError, ValueError):
        counts = None
    if counts is None or any(v < 0 for v in counts):
        raise ModelError(
            f"nafnet: {name}={value!r} is invalid", "use a list of block counts, e.g. [1, 1, 2]"
        )
    return counts


class NAFNet(nn.Module):
    """U-shaped NAFNet with a global residual; input multiple is ``2**len(enc_blocks)``.

    Args:
        in_ch: image channels; the output has the same count.
        width: channels at full resolution; doubled at every level.
        enc_blocks: NAFBlocks per encoder level (one entry per level).
        middle_blocks: NAFBlocks at the lowest resolution.
        dec_blocks: NAFBlocks per decoder level (same length as ``enc_blocks``).
    """

    def __init__(
        self,
        in_ch: int = 3,
        width: int = 16,
        enc_blocks: Sequence[int] = (1, 1, 2),
        middle_blocks: int = 2,
        dec_blocks: Sequence[int] = (1, 1, 1),
    ):
        super().__init__()
        enc = _check_counts("enc_blocks", enc_blocks)
        dec = _check_counts("dec_blocks", dec_blocks)
        if len(enc) != len(dec):
            raise ModelError(
                f"nafnet: enc_blocks has {len(enc)} levels but dec_blocks has {len(dec)}",
                "give both lists the same length",
            )
        for name, v, lo in (
            ("in_ch", in_ch, 1),
            ("width", width, 1),
            ("middle_blocks", middle_blocks, 0),
        ):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ModelError(f"nafnet: {name}={v!r} is invalid", f"use an integer >= {lo}")
        self.in_channels = in_ch
        self.multiple = 2 ** len(enc)

        self.intro = nn.Conv2d(in_ch, width, 3, padding=1)
        self.encoders = nn.ModuleList()
        self.downs = nn.ModuleList()
        ch = width
        for n in enc:
            self.encoders.append(_blocks(ch, n))
            self.downs.append(nn.Conv2d(ch, ch * 2, 2, stride=2))
            ch *= 2
        self.middle = _blocks(ch, middle_blocks)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for n in dec:
            self.ups.append(nn.Sequential(nn.Conv2d(ch, ch * 2, 1, bias=False), nn.PixelShuffle(2)))
            ch //= 2
            self.decoders.append(_blocks(ch, n))
        self.ending = nn.Conv2d(width, in_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.intro(x)
        skips = []
        for enc, down in zip(self.encoders, self.downs, strict=True):
            f = enc(f)
            skips.append(f)
            f = down(f)
        f = self.middle(f)
        for up, dec, s in zip(self.ups, self.decoders, reversed(skips), strict=True):
            f = dec(up(f) + s)
        return x + self.ending(f)
