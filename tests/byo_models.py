"""Tiny bring-your-own architectures for the registry and checkpoint tests.

Imported by spec string (``byo_models:Tiny``) with the ``tests`` folder on ``sys.path``.
"""

from __future__ import annotations

import torch
from torch import nn


class Tiny(nn.Module):
    """A 3x3 conv residual net with no ``multiple`` attribute (the registry adds 1)."""

    def __init__(self, ch: int = 3, hidden: int = 4):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(torch.relu(self.conv1(x)))


class Strided(Tiny):
    """Like :class:`Tiny` but needs inputs that are a multiple of 4."""

    multiple = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise RuntimeError(f"Strided needs H, W multiples of 4, got {tuple(x.shape)}")
        return super().forward(x)


NOT_A_MODULE = object()
