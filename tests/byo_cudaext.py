"""A restorer whose module imports a CUDA-only extension at module level, as research code
with custom CUDA kernels does. The CPU path never calls it, so ``--stub-module`` lets it load.

Kept apart from :mod:`byo_obstacles`: importing this module fails without the stub.
"""

from __future__ import annotations

import colorsys  # noqa: F401  (stands in for a heavy package in the tests)

import torch
import udc_fused_cuda_ops as fused  # the CUDA-only extension: not installed on CPU machines
from torch import nn


class ExtNet(nn.Module):
    """conv-ReLU-conv residual; ``use_fused=True`` would call the CUDA kernel instead."""

    def __init__(self, hidden: int = 4, use_fused: bool = False):
        super().__init__()
        self.use_fused = use_fused
        self.conv1 = nn.Conv2d(3, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_fused:
            return fused.restore(x)
        return x + self.conv2(torch.relu(self.conv1(x)))
