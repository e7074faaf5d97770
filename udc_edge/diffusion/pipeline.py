"""Exportable graphs with a purifier: the k-step sampler alone, or purifier + restorer.

Both take ``(input, noise)``: the diffusion noise is a graph input, never a random op, so
torch, ONNX Runtime and TensorRT give the same output for the same noise. Sizes are padded
on the host to ``multiple`` (recorded in the ONNX metadata by ``export_onnx``), so the
graphs carry no shape-dependent padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from udc_edge.models.padding import model_multiple


class PurifierGraph(nn.Module):
    """``(input, noise) -> purified``: a distilled k-step sampler as one graph."""

    def __init__(self, sampler: nn.Module):
        super().__init__()
        self.sampler = sampler
        self.multiple = model_multiple(sampler)

    def forward(self, input: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.sampler(input, noise).clamp(0, 1)


class PurifiedRestorer(nn.Module):
    """``(input, noise) -> restored``: purify, then restore, as one graph. Inputs must be
    multiples of :attr:`multiple` (both parts' multiples): callers pad (``Padded``,
    ``run_padded``, engines), so the graph holds no pad/crop ops."""

    def __init__(self, sampler: nn.Module, restorer: nn.Module):
        super().__init__()
        self.sampler, self.restorer = sampler, restorer
        self.multiple = math.lcm(model_multiple(sampler), model_multiple(restorer))

    def forward(self, input: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.restorer(self.sampler(input, noise).clamp(0, 1))


def purifier_module(purifier: str, restorer: nn.Module | None = None) -> nn.Module:
    """The export module for ``--purifier P_k`` (with a restorer: the whole defended pipeline)."""
    from udc_edge.diffusion.purifier import load_purifier

    pur, _ = load_purifier(purifier)
    sampler = pur.sampler()
    return (PurifiedRestorer(sampler, restorer) if restorer is not None else PurifierGraph(sampler)).eval()
