"""Parameter and MAC counts, measured with torch's own FLOP counter rather than guessed.

``count_macs`` runs the model once on a zeros tensor under ``FlopCounterMode`` and halves
the FLOPs (one multiply-accumulate = 2 FLOPs). Like fvcore/ptflops, the counter counts
convolutions and matrix products only; element-wise ops (activations, LayerNorm, gates)
are not counted.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from udc_edge.models.padding import model_multiple, padded_size


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, channels: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a 1 x C x H x W image.

    H and W are rounded up to the model's ``multiple`` (what :func:`run_padded` would run);
    C defaults to the model's ``in_channels`` or 3.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height}x{width}")
    m = model_multiple(model)
    c = channels if channels is not None else getattr(model, "in_channels", 3)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.zeros(1, c, padded_size(height, m), padded_size(width, m), device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2
