"""No output line from third-party logging without --debug: ONNX Runtime's quantiser logs
"Expected bias '...' to be an initializer" for every Conv whose bias is computed at run
time; ``udc-edge build`` keeps that (and ANSI colour codes) off the terminal, ``--debug``
lets it through."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from udc_edge.export.onnx_export import short_error


def _computed_bias_onnx(path: Path) -> None:
    """input -> Conv(W, bias = zeros * min(input shape)) + input: the bias is not an initializer."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.1, (3, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Constant", [], ["b0"], value=numpy_helper.from_array(np.zeros(3, np.float32))),
             helper.make_node("Shape", ["input"], ["shape"]),
             helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMin", ["shape_f"], ["smallest"], keepdims=0),
             helper.make_node("Mul", ["b0", "smallest"], ["bias"]),
             helper.make_node("Conv", ["input", "W", "bias"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["input", "conv"], ["output"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3, "h", "w"]) for n in ("input", "output")]
    graph = helper.make_graph(nodes, "computed_bias", io[:1], io[1:], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _build(tmp_path: Path, *root: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(Path(p or ".").resolve()) for p in sys.path)}
    env.pop("UDC_EDGE_DEBUG", None)
    out = tmp_path / f"int8{len(root)}.onnx"
    proc = subprocess.run([sys.executable, "-m", "udc_edge", "-q", "--threads", "1", *root, "build",
                           str(tmp_path / "bias.onnx"), "--out", str(out), "--precision", "int8",
                           "--calib", "synth:poled", "--calib-count", "6"],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_build_output_has_no_third_party_logging_without_debug(tmp_path):
    _computed_bias_onnx(tmp_path / "bias.onnx")
    quiet = _build(tmp_path)
    assert "built " in quiet and "Expected bias" not in quiet and "WARNING" not in quiet and "\x1b[" not in quiet
    assert "Expected bias 'bias' to be an initializer" in _build(tmp_path, "--debug")  # the test can fail


def test_exporter_colour_codes_are_stripped_from_errors():
    exc = RuntimeError("\x1b[1;31mUnsupported: ONNX export of operator Unfold\x1b[0m, input size not accessible")
    assert short_error(exc) == "RuntimeError: Unsupported: ONNX export of operator Unfold, input size not accessible"
