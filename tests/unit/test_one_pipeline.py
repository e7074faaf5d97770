"""Every purify -> restore path (export graph, defence, fine-tuning, verify) is the one
``purify_restore``: each caller's output equals the function's with that caller's options.

The tiny sampler leaves [0, 1] (so clamping shows) and the tiny restorer reads the whole
image and needs a multiple of 4 (so padding shows): a caller that drifts from its options fails.
"""

import pytest
import torch
from torch import nn

from udc_edge.defence.defence import DefendedPipeline
from udc_edge.deploy.verify import FixedNoise
from udc_edge.diffusion.pipeline import PurifiedRestorer, PurifierGraph, purify, purify_restore
from udc_edge.training.finetune import FixedNoisePipeline, _inputs


class Sampler(nn.Module):
    multiple = 2

    def forward(self, x, noise):
        return 1.6 * x - 0.3 + 0.2 * noise


class Restorer(nn.Module):
    multiple, in_channels = 4, 3

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0, "restorer needs a multiple of 4"
        return self.conv(x) + x.mean(dim=(2, 3), keepdim=True)


def _data(h=8, w=12):
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, h, w, generator=g), torch.randn(2, 3, h, w, generator=g)


def test_options_matter_for_these_modules():
    s, r = Sampler(), Restorer()
    x, n = _data()
    assert not torch.equal(purify_restore(s, r, x, n, clamp=True, pad=False),
                           purify_restore(s, r, x, n, clamp=False, pad=False))
    xo, no = _data(7, 10)
    assert purify_restore(s, r, xo, no, clamp=False, pad=True).shape == xo.shape
    with pytest.raises(AssertionError, match="multiple of 4"):
        purify_restore(s, r, xo, no, clamp=False, pad=False)


def test_export_graphs_clamp_and_do_not_pad():
    s, r = Sampler(), Restorer()
    x, n = _data()
    assert torch.equal(PurifiedRestorer(s, r)(x, n), purify_restore(s, r, x, n, clamp=True, pad=False))
    assert torch.equal(PurifierGraph(s)(x, n), purify(s, x, n, clamp=True))


def test_defence_pipeline_pads_and_does_not_clamp():
    s, r = Sampler(), Restorer()
    x, n = _data(7, 10)
    assert torch.equal(DefendedPipeline(r, s)(x, n), purify_restore(s, r, x, n, clamp=False, pad=True))
    assert torch.equal(DefendedPipeline(r)(x), purify_restore(None, r, x, None, clamp=False, pad=True))


def test_defence_bpda_gradient_is_the_pipelines():
    s, r = Sampler(), Restorer()
    x, n = _data(7, 10)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya = DefendedPipeline(r, s, bpda=True)(a, n)
    yb = purify_restore(s, r, b, n, clamp=False, pad=True, bpda=True)
    (ya ** 2).sum().backward()
    (yb ** 2).sum().backward()
    assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)


def test_finetune_uses_the_pipeline():
    s, r = Sampler(), Restorer()
    x, _ = _data()
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    assert torch.equal(FixedNoisePipeline(s, r, seed=5)(x), purify_restore(s, r, x, noise, clamp=True, pad=False))
    inputs = _inputs("purified", x, x, r, s, None, 9)
    assert torch.equal(inputs, purify(s, x, torch.randn(x.shape, generator=torch.Generator().manual_seed(9))))


def test_verify_reference_uses_the_pipeline():
    s, r = Sampler(), Restorer()
    x, _ = _data()
    pipe = PurifiedRestorer(s, r)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(FixedNoise(3, pipe.multiple).module(pipe)(x),
                       purify_restore(s, r, x, noise, clamp=True, pad=False))
