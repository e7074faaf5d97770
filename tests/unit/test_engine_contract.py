"""The Engine contract: ``infer(feed)`` returns every named output (cropped back like the
single-output call), ``engine(x)`` stays the first output, and layer profiling is one
protocol with one row type on every backend that offers it. Real ONNX Runtime sessions."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from udc_edge.core.errors import EngineError
from udc_edge.engines.base import LayerProfiler, LayerTime
from udc_edge.engines.ort import OrtEngine


@pytest.fixture(scope="module")
def two_outputs(tmp_path_factory):
    """input -> (restored = input * 2, residual = -input): a graph with two named outputs."""
    shape = ["n", 3, "h", "w"]
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    a = helper.make_tensor_value_info("restored", TensorProto.FLOAT, shape)
    b = helper.make_tensor_value_info("residual", TensorProto.FLOAT, shape)
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    graph = helper.make_graph([helper.make_node("Mul", ["input", "two"], ["restored"]),
                               helper.make_node("Neg", ["input"], ["residual"])], "g", [x], [a, b], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("contract") / "two.onnx"
    onnx.save(model, str(path))
    return path


def test_infer_returns_every_named_output_cropped_back(two_outputs):
    x = np.random.default_rng(0).random((1, 3, 30, 21), dtype=np.float32)
    with OrtEngine(two_outputs, multiple=8) as eng:  # padded to 32x24 and cropped back
        out = eng.infer({"input": x})
        first = eng(x)
    assert set(out) == {"restored", "residual"}
    np.testing.assert_allclose(out["restored"], 2 * x, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["residual"], -x, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(first, out["restored"])


def test_infer_refuses_a_feed_with_wrong_names(two_outputs):
    with OrtEngine(two_outputs) as eng, pytest.raises(EngineError, match="takes inputs"):
        eng.infer({"image": np.zeros((1, 3, 8, 8), np.float32)})


def test_ort_profile_is_the_layer_profiler_protocol(two_outputs):
    x = np.zeros((1, 3, 16, 16), np.float32)
    with OrtEngine(two_outputs, threads=1) as eng:
        assert isinstance(eng, LayerProfiler)
        rows = eng.profile_layers(x, runs=2)
    assert rows and all(isinstance(r, LayerTime) and r.op in ("Mul", "Neg") and r.ms >= 0 for r in rows)
