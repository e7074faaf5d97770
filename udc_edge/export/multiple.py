"""The input-size multiple a network needs, found by running it (not read from an attribute).

UNet-like restorers concatenate encoder and decoder features, pixel-unshuffle with
``view``, or window their attention: they only run when H and W are multiples of some
``m`` (8, 16, 32 ...), and fail at other sizes with "Sizes of tensors must match" or
"shape '[...]' is invalid". :func:`find_multiple` tries ``m`` = the model's declared
multiple times 1, 2, 4, ... up to :data:`MAX_MULTIPLE` and returns the smallest one for
which two consecutive multiples, ``k*m`` and ``k*m + m`` (so not multiples of ``2m``), both
run. Export then pads to ``m`` on the host (engines) and checks parity at two multiples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from udc_edge.models.padding import padded_size

MAX_MULTIPLE = 256


@dataclass
class MultipleSearch:
    """The multiple found (``None``: none up to :data:`MAX_MULTIPLE`) and what each try met."""

    multiple: int | None
    tried: list[dict] = field(default_factory=list)  # {"multiple", "sizes", "error"}

    @property
    def last_error(self) -> str:
        return next((t["error"] for t in reversed(self.tried) if t["error"]), "")


def find_multiple(run: Callable[[torch.Tensor], object], height: int, width: int, start: int = 1,
                  limit: int = MAX_MULTIPLE) -> MultipleSearch:
    """Smallest ``m = start * 2**j <= limit`` such that ``run`` accepts 1x3 images of
    ``(H, W)`` and ``(H + m, W + m)``, with ``H, W`` = the example size rounded up to ``m``."""
    from udc_edge.export.onnx_export import short_error

    search = MultipleSearch(None)
    m = max(1, start)
    while m <= limit:
        h, w = padded_size(height, m), padded_size(width, m)
        sizes = [(h, w), (h + m, w + m)]
        error = ""
        for sh, sw in sizes:
            try:
                with torch.no_grad():
                    run(torch.rand(1, 3, sh, sw))
            except Exception as exc:  # noqa: BLE001 (the user's forward can raise anything; recorded)
                error = f"{sh}x{sw}: {short_error(exc)}"
                break
        search.tried.append({"multiple": m, "sizes": [list(s) for s in sizes], "error": error})
        if not error:
            search.multiple = m
            return search
        m *= 2
    return search
