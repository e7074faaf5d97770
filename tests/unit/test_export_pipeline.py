"""Purifier graphs export as ONE ONNX graph with the noise as an input, matching torch."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from udc_edge.diffusion.pipeline import purifier_module
from udc_edge.engines import load_engine
from udc_edge.engines.build import build_engine
from udc_edge.engines.spec import BuildSpec
from udc_edge.export.onnx_export import ExportSpec, export_onnx


def test_purifier_plus_restorer_is_one_graph_with_a_noise_input(tiny_restorer, tmp_path):
    module = purifier_module("purifier-poled-k1", tiny_restorer)
    rep = export_onnx(module, tmp_path / "p.onnx", ExportSpec(height=32, width=32, input_names=("input", "noise"),
                                                             parity_images=1))
    assert all(p["max_abs_err"] < 1e-3 for p in rep.parity) and len(rep.parity) == 2
    graph = onnx.load(str(tmp_path / "p.onnx")).graph
    assert [i.name for i in graph.input] == ["input", "noise"]
    assert not any(n.op_type.startswith("Random") for n in graph.node)  # no randomness inside
    build_engine(tmp_path / "p.onnx", tmp_path / "e.onnx", BuildSpec())
    x = np.random.default_rng(0).random((1, 3, 30, 42), dtype=np.float32)  # padded on the host
    noise = np.random.default_rng(1).standard_normal((1, 3, 30, 42)).astype(np.float32)
    with load_engine(tmp_path / "e.onnx") as eng:
        y1, y2 = eng(x, noise), eng(x, noise)
    np.testing.assert_array_equal(y1, y2)  # same noise, same output
    m = module.multiple
    pad = ((0, 0), (0, 0), (0, -30 % m), (0, -42 % m))  # what the engine does on the host
    with torch.no_grad():
        ref = module(
            torch.from_numpy(np.pad(x, pad, mode="reflect")), torch.from_numpy(np.pad(noise, pad, mode="reflect"))
        )
    np.testing.assert_allclose(y1, ref.numpy()[:, :, :30, :42], atol=2e-3)  # ORT vs torch through a diffusion UNet
