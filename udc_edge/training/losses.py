"""Restoration losses: Charbonnier (robust L1), L2, and an FFT amplitude term.

The frequency term (L1 between the 2-D FFTs of output and target, as in NAFNet/UDC
restorers' "FFT loss") pushes the network to restore the high frequencies that the
display's PSF removed, which pixel losses alone under-weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def fft_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    fp = torch.fft.rfft2(pred, norm="ortho")
    ft = torch.fft.rfft2(target, norm="ortho")
    return (torch.view_as_real(fp) - torch.view_as_real(ft)).abs().mean()


def restoration_loss(
    pred: torch.Tensor, target: torch.Tensor, pixel: str = "charbonnier", fft_weight: float = 0.05
) -> torch.Tensor:
    """Pixel loss (``charbonnier``, ``l1`` or ``l2``) plus ``fft_weight`` x FFT L1."""
    if pixel == "charbonnier":
        loss = charbonnier(pred, target)
    elif pixel == "l1":
        loss = F.l1_loss(pred, target)
    elif pixel == "l2":
        loss = F.mse_loss(pred, target)
    else:
        raise ValueError(f"unknown pixel loss {pixel!r}")
    if fft_weight > 0:
        loss = loss + fft_weight * fft_l1(pred, target)
    return loss
