"""The ONE purify -> restore pipeline (:func:`purify_restore`) and the exportable graphs
with a purifier: the k-step sampler alone, or purifier + restorer.

Export, the defence evaluation, fine-tuning and verify all call :func:`purify_restore`;
their differences (clamp the purified image, pad inside, BPDA) are explicit options.

Both take ``(input, noise)``: the diffusion noise is a graph input, never a random op, so
torch, ONNX Runtime and TensorRT give the same output for the same noise. Sizes are padded
on the host to ``multiple`` (recorded in the ONNX metadata by ``export_onnx``), so the
graphs carry no shape-dependent padding.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from udc_edge.models.padding import model_multiple, run_padded


def purify(sampler: nn.Module, x: torch.Tensor, noise: torch.Tensor, *, clamp: bool = False,
           bpda: bool = False) -> torch.Tensor:
    """``sampler(x, noise)``, clamped to [0, 1] if ``clamp``. ``bpda=True`` runs the sampler
    without a graph and passes the gradient straight through it (identity, Athalye et al. 2018)."""
    if bpda:
        with torch.no_grad():
            purified = sampler(x, noise)
        out = x + (purified - x).detach()
    else:
        out = sampler(x, noise)
    return out.clamp(0, 1) if clamp else out


def purify_restore(sampler: nn.Module | None, restorer: nn.Module, x: torch.Tensor,
                   noise: torch.Tensor | None, *, clamp: bool, pad: bool, bpda: bool = False) -> torch.Tensor:
    """Purify (if ``sampler``) then restore. ``clamp``: clip the purified image to [0, 1] (the
    exported graph does); ``pad``: run the restorer through ``run_padded`` (any H, W) rather
    than directly (inputs already a multiple, as in an exported graph)."""
    if sampler is not None:
        if noise is None:
            raise ValueError("purify_restore with a sampler needs a noise tensor")
        x = purify(sampler, x, noise, clamp=clamp, bpda=bpda)
    return run_padded(restorer, x) if pad else restorer(x)


class PurifierGraph(nn.Module):
    """``(input, noise) -> purified``: a distilled k-step sampler as one graph."""

    def __init__(self, sampler: nn.Module):
        super().__init__()
        self.sampler = sampler
        self.multiple = model_multiple(sampler)

    def forward(self, input: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return purify(self.sampler, input, noise, clamp=True)


class PurifiedRestorer(nn.Module):
    """``(input, noise) -> restored``: purify, then restore, as one graph. Inputs must be
    multiples of :attr:`multiple` (both parts' multiples): callers pad (``Padded``,
    ``run_padded``, engines), so the graph holds no pad/crop ops."""

    def __init__(self, sampler: nn.Module, restorer: nn.Module):
        super().__init__()
        self.sampler, self.restorer = sampler, restorer
        self.multiple = math.lcm(model_multiple(sampler), model_multiple(restorer))

    def forward(self, input: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return purify_restore(self.sampler, self.restorer, input, noise, clamp=True, pad=False)


def purifier_module(purifier: str, restorer: nn.Module | None = None) -> nn.Module:
    """The export module for ``--purifier P_k`` (with a restorer: the whole defended pipeline)."""
    from udc_edge.diffusion.purifier import load_purifier

    pur, _ = load_purifier(purifier)
    sampler = pur.sampler()
    return (PurifiedRestorer(sampler, restorer) if restorer is not None else PurifierGraph(sampler)).eval()
