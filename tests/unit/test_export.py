"""ONNX export: checked, parity-tested at two sizes, atomic, with clear failures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from udc_edge.core.errors import ExportError, UsageError
from udc_edge.export.onnx_export import ExportSpec, export_onnx
from udc_edge.export.onnxrt import make_session


def test_dynamic_export_matches_torch_at_two_sizes(tiny_restorer, tmp_path):
    rep = export_onnx(tiny_restorer, tmp_path / "m.onnx", ExportSpec(height=48, width=40, parity_images=1))
    assert rep.exporter == "torchscript" and len(rep.parity) == 2
    assert {(p["height"], p["width"]) for p in rep.parity} == {(48, 40), (56, 56)}
    assert all(p["max_abs_err"] < 1e-4 and p["psnr_db"] > 60 for p in rep.parity)
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model)
    assert {p.key: p.value for p in model.metadata_props}["udc_edge.multiple"] == "4"
    # Really dynamic: a third, odd-multiple size runs and matches torch.
    x = np.random.default_rng(0).random((2, 3, 36, 92), dtype=np.float32)
    y = make_session(str(tmp_path / "m.onnx")).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = tiny_restorer(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_fixed_shape_export_has_static_dims(tiny_restorer, tmp_path):
    export_onnx(tiny_restorer, tmp_path / "f.onnx", ExportSpec(height=30, width=30, dynamic=False, parity_images=1))
    dims = onnx.load(str(tmp_path / "f.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 32, 32]  # rounded up to the multiple 4


class _Noisy(nn.Module):
    """Adds fresh randomness every call: no exported graph can reproduce it."""

    multiple = 1

    def forward(self, x):
        return x + torch.rand_like(x)


def test_parity_failure_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(_Noisy(), tmp_path / "n.onnx", ExportSpec(height=16, width=16, exporter="torchscript",
                                                              parity_images=1))
    assert list(tmp_path.iterdir()) == []


def test_bad_specs():
    with pytest.raises(UsageError, match="--exporter"):
        ExportSpec(exporter="tflite")
    with pytest.raises(UsageError, match="--opset"):
        ExportSpec(opset=9)


def test_out_must_be_onnx(tiny_restorer, tmp_path):
    with pytest.raises(UsageError, match=".onnx"):
        export_onnx(tiny_restorer, tmp_path / "m.bin")


@pytest.mark.slow
def test_dynamo_exporter_works_too(tiny_restorer, tmp_path):
    rep = export_onnx(tiny_restorer, tmp_path / "d.onnx", ExportSpec(height=32, width=32, exporter="dynamo",
                                                                     parity_images=1))
    assert rep.exporter == "dynamo" and rep.opset >= 18
    assert all(p["max_abs_err"] < 1e-4 for p in rep.parity)
    assert not list(tmp_path.glob("*.data"))  # one self-contained file
