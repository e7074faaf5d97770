"""Tiled inference blends tiles back into the untiled result."""

from __future__ import annotations

import pytest
import torch

from udc_edge.core.errors import UsageError
from udc_edge.core.tiling import run_tiled


@pytest.mark.parametrize("shape", [(1, 3, 100, 75), (2, 3, 64, 200), (1, 3, 40, 40)])
def test_pointwise_function_is_reproduced_exactly(shape):
    x = torch.rand(shape)
    y = run_tiled(lambda t: t * 2 + 1, x, tile=32, overlap=8)
    torch.testing.assert_close(y, x * 2 + 1)


def test_convolution_matches_away_from_seams():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        whole, tiled = conv(x), run_tiled(conv, x, tile=40, overlap=12)
    assert (whole - tiled).abs().mean() < 1e-3


def test_bad_tiles_are_refused():
    with pytest.raises(UsageError, match="--overlap"):
        run_tiled(lambda t: t, torch.rand(1, 3, 64, 64), tile=32, overlap=20)
    with pytest.raises(UsageError, match="--tile"):
        run_tiled(lambda t: t, torch.rand(1, 3, 64, 64), tile=4)
