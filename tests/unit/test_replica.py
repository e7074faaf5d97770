"""The differentiable replica of a Q/DQ ONNX engine: equal to a hand-built fake-quant conv,
equal to ONNX Runtime's INT8 output, gradients where the float model has them, clear
errors for what it cannot represent."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from udc_edge.engines.replica import OnnxReplica, ReplicaError, ste_round
from udc_edge.export.onnxrt import make_session


def _qdq_conv(
    w: np.ndarray,
    b: np.ndarray,
    s_in: float,
    z_in: int,
    w_scales: np.ndarray,
    s_out: float,
    z_out: int,
    act=TensorProto.UINT8,
) -> onnx.ModelProto:
    """input -Q/DQ-> Conv(DQ(int8 per-channel weights), bias) -Q/DQ-> output, written by hand."""
    qw = np.clip(np.round(w / w_scales[:, None, None, None]), -127, 127).astype(np.int8)
    zt = np.int8 if act == TensorProto.INT8 else np.uint8
    inits = [
        numpy_helper.from_array(qw, "qw"),
        numpy_helper.from_array(w_scales.astype(np.float32), "ws"),
        numpy_helper.from_array(np.zeros(len(w_scales), np.int8), "wz"),
        numpy_helper.from_array(b.astype(np.float32), "b"),
        numpy_helper.from_array(np.array(s_in, np.float32), "si"),
        numpy_helper.from_array(np.array(z_in, zt), "zi"),
        numpy_helper.from_array(np.array(s_out, np.float32), "so"),
        numpy_helper.from_array(np.array(z_out, zt), "zo"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "si", "zi"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "si", "zi"], ["xd"]),
        helper.make_node("DequantizeLinear", ["qw", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd", "b"], ["y"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("QuantizeLinear", ["y", "so", "zo"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "so", "zo"], ["output"]),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, None, None])],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture
def conv_case(rng):
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, 4).astype(np.float32)
    scales = (np.abs(w).reshape(4, -1).max(1) / 127).astype(np.float32)
    return w, b, scales


def _hand_fake_quant(x, w, b, scales, s_in, z_in, s_out, z_out, lo, hi):
    """The same computation written directly, no interpreter: float64, round half to even,
    scales as the float32 values the graph stores."""
    s_in, s_out, scales = float(np.float32(s_in)), float(np.float32(s_out)), scales.astype(np.float64)
    x = torch.from_numpy(x).double()
    xd = (torch.clamp(torch.round(x / s_in) + z_in, lo, hi) - z_in) * s_in
    qw = np.clip(np.round(w / scales[:, None, None, None]), -127, 127)
    wd = torch.from_numpy(qw * scales[:, None, None, None].astype(np.float64))
    y = F.conv2d(xd, wd, torch.from_numpy(b).double(), padding=1)
    return ((torch.clamp(torch.round(y / s_out) + z_out, lo, hi) - z_out) * s_out).float().numpy()


@pytest.mark.parametrize(
    "act,z_in,z_out,lo,hi", [(TensorProto.UINT8, 3, 128, 0, 255), (TensorProto.INT8, 0, 0, -128, 127)]
)
def test_replica_equals_hand_built_fake_quant_conv_and_ort(conv_case, rng, act, z_in, z_out, lo, hi):
    w, b, scales = conv_case
    s_in, s_out = 1 / 250, 0.02
    model = _qdq_conv(w, b, s_in, z_in, scales, s_out, z_out, act)
    onnx.checker.check_model(model)
    rep = OnnxReplica(model)
    x = rng.uniform(0, 1, (1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        out = rep(torch.from_numpy(x)).numpy()
    hand = _hand_fake_quant(x, w, b, scales, s_in, z_in, s_out, z_out, lo, hi)
    np.testing.assert_array_equal(out, hand)
    eng = make_session(model.SerializeToString(), threads=1).run(None, {"input": x})[0]
    assert np.abs(out - eng).max() <= s_out * 1.001  # at most one step, at a rounding tie
    assert np.mean(np.abs(out - eng) > 1e-6) < 0.01
    # saturation is the engine's: outputs never leave the integer range
    assert out.max() <= (hi - z_out) * s_out + 1e-6 and out.min() >= (lo - z_out) * s_out - 1e-6


def test_ste_gradients_nonzero_where_the_float_models_are(conv_case, rng):
    w, b, scales = conv_case
    rep = OnnxReplica(_qdq_conv(w, b, 1 / 250, 3, scales, 0.02, 128))
    x = torch.from_numpy(rng.uniform(0.2, 0.8, (1, 3, 16, 16)).astype(np.float32)).requires_grad_(True)
    (g_rep,) = torch.autograd.grad(rep(x).sum(), x)
    xf = x.detach().clone().requires_grad_(True)
    (g_float,) = torch.autograd.grad(F.conv2d(xf, torch.from_numpy(w), torch.from_numpy(b), padding=1).sum(), xf)
    nz = g_float.abs() > 1e-6
    assert nz.any() and (g_rep.abs()[nz] > 0).all()  # rounding does not block gradients
    plain = torch.round(x * 250)  # without the straight-through estimator, round has no gradient
    assert torch.autograd.grad(plain.sum(), x)[0].abs().max() == 0
    s = ste_round(x * 250)
    assert torch.equal(s, plain) and torch.allclose(torch.autograd.grad(s.sum(), x)[0], torch.full_like(x, 250.0))


def test_saturated_quantiser_has_zero_gradient(conv_case):
    w, b, scales = conv_case
    rep = OnnxReplica(_qdq_conv(w, b, 1 / 250, 3, scales, 0.02, 128))
    x = torch.full((1, 3, 8, 8), 5.0, requires_grad=True)  # far above the input range [(0-3)/250, (255-3)/250]
    (g,) = torch.autograd.grad(rep(x).sum(), x)
    assert g.abs().max() == 0


def test_replica_of_a_real_qdq_restorer_matches_ort(tiny_onnx, tmp_path, rng):
    from udc_edge.calibration.dataset import load_calibration_set
    from udc_edge.calibration.qdq import quantize_bytes
    from udc_edge.calibration.ranges import compute_ranges
    from udc_edge.core.metrics import psnr

    cs = load_calibration_set("synth:toled", 3, 48)
    q = quantize_bytes(tiny_onnx, compute_ranges(tiny_onnx, cs.images), "cpu")
    (tmp_path / "q.onnx").write_bytes(q)
    rep = OnnxReplica.from_file(tmp_path / "q.onnx")
    sess = make_session(q, threads=1)
    x = load_calibration_set("synth:toled", 2, 48, seed=9).images
    for xi in x:
        with torch.no_grad():
            r = rep(torch.from_numpy(xi[None])).numpy()[0]
        e = sess.run(None, {"input": xi[None]})[0][0]
        assert psnr(np.clip(r, 0, 1).transpose(1, 2, 0), np.clip(e, 0, 1).transpose(1, 2, 0)) >= 50


def test_unsupported_op_is_named(conv_case):
    w, b, scales = conv_case
    model = _qdq_conv(w, b, 1 / 250, 3, scales, 0.02, 128)
    model.graph.node.append(helper.make_node("Softmax", ["output"], ["sm"]))
    model.graph.output[0].name = "sm"
    with pytest.raises(ReplicaError, match="Softmax"):
        OnnxReplica(model)
    model = _qdq_conv(w, b, 1 / 250, 3, scales, 0.02, 128)
    for i in model.graph.initializer:
        if i.name == "zo":
            i.CopyFrom(numpy_helper.from_array(np.array(0, np.int16), "zo"))
    with pytest.raises(ReplicaError, match="INT16"):
        OnnxReplica(model)
