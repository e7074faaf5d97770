"""Purification averaged over K noise draws (``average``): the draws are views of the one
noise input, independent per element; averaging cuts the output's noise variance; the
graph keeps its (image, noise) signature and exports with ONNX Runtime parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from udc_edge.core.errors import ModelError, UsageError
from udc_edge.diffusion.purifier import Purifier
from udc_edge.diffusion.sampler import MAX_AVERAGE, noise_views


@pytest.fixture(scope="module")
def purifier() -> Purifier:
    torch.manual_seed(0)
    return Purifier(unet="purifier-t", t_star=0.1, steps=2, resolution=32).eval()


def test_noise_views_take_every_element_from_a_different_source():
    n = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).reshape(2, 3, 6, 8)
    views = torch.stack(noise_views(n, MAX_AVERAGE))  # (8, N, C, H, W) of source indices
    per_element = views.flatten(1).T  # one row per output element: its 8 source indices
    assert all(len(set(row.tolist())) == MAX_AVERAGE for row in per_element)
    assert torch.equal(views[0], n)
    for v in views:  # every view is a permutation of the same noise: still N(0, 1) values
        assert torch.equal(v.flatten().sort().values, n.flatten().sort().values)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 30, 37)])
def test_k_draw_purification_is_the_mean_of_single_purifications_of_the_views(purifier, shape):
    """Exactly what averaging promises, at a multiple and at a padded size, batch > 1 included."""
    g = torch.Generator().manual_seed(sum(shape))
    x, n = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
    with torch.no_grad():
        avg = purifier.sampler(average=4)(x, n)
        single = purifier.sampler(average=1)
        ref = torch.stack([single(x, v) for v in noise_views(n, 4)]).mean(0)
    assert torch.allclose(avg, ref, atol=1e-5)


def test_k_draws_cut_the_noise_variance(purifier):
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    noises = [torch.randn(x.shape, generator=g) for _ in range(8)]
    with torch.no_grad():
        one = torch.stack([purifier.sampler(steps=1)(x, n) for n in noises])
        four = torch.stack([purifier.sampler(steps=1, average=4)(x, n) for n in noises])
        again = purifier.sampler(steps=1, average=4)(x, noises[0])
    assert torch.equal(again, four[0])  # deterministic for fixed noise
    assert four.shape == one.shape and 0 <= four.min() and four.max() <= 1
    # independent draws: the variance over noise of a 4-draw mean is about a quarter
    assert four.var(dim=0).mean() < 0.4 * one.var(dim=0).mean()


def test_averaging_sampler_exports_to_one_graph_matching_torch(purifier, tmp_path):
    import onnxruntime as ort

    sampler = purifier.sampler(steps=1, average=4)
    from udc_edge.diffusion.pipeline import PurifierGraph
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    # the shipped path (export --purifier): checker, parity, metadata
    export_onnx(PurifierGraph(sampler), tmp_path / "avg.onnx",
                ExportSpec(height=32, width=32, input_names=("input", "noise"), parity_images=1))
    sess = ort.InferenceSession(str(tmp_path / "avg.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "noise"]
    for shape in [(1, 3, 32, 32), (2, 3, 16, 24)]:
        g = torch.Generator().manual_seed(sum(shape))
        x, n = torch.rand(shape, generator=g), torch.randn(shape, generator=g)
        with torch.no_grad():
            ref = sampler(x, n).numpy()
        out = sess.run(None, {"input": x.numpy(), "noise": n.numpy()})[0]
        assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-4


def test_average_is_validated_and_stored(purifier, tmp_path):
    for bad in (0, MAX_AVERAGE + 1, 2.0, True):
        with pytest.raises(UsageError, match="average"):
            purifier.sampler(average=bad)
    with pytest.raises(ModelError, match="purifier average"):
        Purifier(unet="purifier-t", average=0)
    p = Purifier(**{**purifier.config(), "average": 4, "steps": 1})
    assert p.config()["average"] == 4 and p.sampler().average == 4
