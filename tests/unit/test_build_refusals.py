"""INT8 of a graph calibration images cannot feed is one line, not an ONNX Runtime traceback
(issue 15): a 1-channel input, an int64 input."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from udc_edge.cli import app


def _graph(path, channels: int, dtype: int) -> None:
    w = numpy_helper.from_array(np.ones((channels, channels, 3, 3), np.float32) / 9, "w")
    nodes = [helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT)] if dtype != TensorProto.FLOAT else []
    nodes.append(helper.make_node("Conv", ["xf" if nodes else "input", "w"], ["output"], pads=[1, 1, 1, 1]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", dtype, ["n", channels, "h", "w"])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", channels, "h", "w"])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize(("channels", "dtype", "says"), [(1, TensorProto.FLOAT, "float32 of shape ?x1x?x?"),
                                                         (3, TensorProto.INT64, "int64 of shape ?x3x?x?")])
def test_int8_of_a_graph_images_cannot_feed_is_refused_in_one_line(tmp_path, channels, dtype, says):
    _graph(tmp_path / "m.onnx", channels, dtype)
    res = CliRunner().invoke(app, ["build", str(tmp_path / "m.onnx"), "--precision", "int8", "--calib", "synth:poled",
                                   "--calib-count", "5", "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 2 and says in res.output and "--precision fp32" in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "e.onnx").exists()
    # FP32 of the same graph still builds
    res = CliRunner().invoke(app, ["-q", "build", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "f.onnx")])
    assert res.exit_code == 0, res.output
