"""The one shared pad-run-crop helper for networks that need H, W to be a multiple of N.

Images are padded at the bottom and right (reflect, so the network sees plausible
content rather than a black border; replicate when the image is too small for reflect,
which needs pad < size), run, and cropped back to their original size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from udc_edge.core.errors import InputError, ModelError

PAD_MODES = ("reflect", "replicate", "constant")


def model_multiple(model: nn.Module) -> int:
    """The input size multiple a model needs (its ``multiple`` attribute, 1 if it has none)."""
    m = getattr(model, "multiple", 1)
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ModelError(
            f"model {type(model).__name__} has an invalid 'multiple' attribute {m!r}",
            "set it to a positive integer (the input size multiple the network needs)",
        )
    return m


def padded_size(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-size // multiple) * multiple


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad an NCHW tensor at the bottom/right so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original ``(h, w)`` for :func:`crop`. ``reflect``
    falls back to ``replicate`` when a pad is not smaller than the side it pads.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode {mode!r} is not one of {PAD_MODES}")
    if x.dim() != 4:
        raise InputError(
            f"expected an NCHW image batch, got a tensor of shape {tuple(x.shape)}",
            "add a batch dimension (x[None]) or convert the image to N x C x H x W",
        )
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop an NCHW tensor back to ``size = (h, w)`` (top-left corner)."""
    h, w = size
    return x[..., :h, :w]


def check_channels(model: nn.Module, x: torch.Tensor) -> None:
    """Refuse an input whose channel count differs from the model's ``in_channels``."""
    expected = getattr(model, "in_channels", None)
    if x.dim() == 4 and isinstance(expected, int) and x.shape[1] != expected:
        raise InputError(
            f"input has {x.shape[1]} channels but {type(model).__name__} expects {expected}",
            "convert the image to RGB (drop alpha, expand greyscale)" if expected == 3 else None,
        )


def run_padded(model: nn.Module, x: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Run ``model`` on an NCHW batch of any H, W: pad to its multiple, run, crop back.

    Gradients flow through (no ``no_grad`` here), so attacks and training can use it.
    """
    check_channels(model, x)
    xp, size = pad_to_multiple(x, model_multiple(model), mode)
    return crop(model(xp), size)


class Padded(nn.Module):
    """A restorer that accepts any H, W (pads to its multiple, crops back); gradients flow,
    so attacks can call it directly."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run_padded(self.model, x)
