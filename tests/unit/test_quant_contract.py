"""The quantisation contract (issue 15): symmetric per-channel INT8 weights with zero-point 0,
percentile ranges inside the MinMax ranges (and some strictly tighter), and a range cache that
misses when the ONNX or the calibration images change."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from udc_edge.calibration.dataset import CalibrationSet, load_calibration_set
from udc_edge.calibration.qdq import quantize_bytes
from udc_edge.calibration.ranges import cached_ranges, compute_ranges


@pytest.fixture(scope="module")
def calib():
    return load_calibration_set("synth:toled", count=6, size=64)


def _weight_qdq(model_bytes: bytes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """(int8 weights, scale, zero point, axis) of every weight QuantizeLinear/DequantizeLinear."""
    m = onnx.load_from_string(model_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = []
    for n in m.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim == 4:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            out.append((inits[n.input[0]], inits[n.input[1]], inits[n.input[2]], axis))
    return out


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
def test_weights_are_symmetric_per_channel_int8_with_zero_point_0(tiny_onnx, calib, target):
    ranges = compute_ranges(tiny_onnx, calib.images, "minmax", symmetric=target == "tensorrt")
    weights = _weight_qdq(quantize_bytes(tiny_onnx, ranges, target))
    float_w = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny_onnx)).graph.initializer}
    assert len(weights) >= 4
    for q, scale, zp, axis in weights:
        assert q.dtype == np.int8 and zp.dtype == np.int8 and not zp.any()
        out_ch = q.shape[axis]
        assert scale.shape == (out_ch,) and out_ch > 1, "one scale per output channel"
        # symmetric: each channel's largest |q| is 127 (scale = max|w| / 127), none is -128
        per_ch = np.abs(np.moveaxis(q.astype(np.int32), axis, 0).reshape(out_ch, -1)).max(axis=1)
        assert (per_ch == 127).all() and q.min() >= -127
        assert len(np.unique(scale)) > 1, "per-tensor scales in disguise"
    # dequantised weights are within half a step of some float weight of the same shape
    for q, scale, _, axis in weights:
        shape = [1] * q.ndim
        shape[axis] = -1
        deq = q * scale.reshape(shape)
        close = [w for w in float_w.values() if w.shape == q.shape and np.abs(w - deq).max() <= scale.max() / 2 + 1e-7]
        assert close, "dequantised weights do not reproduce any float weight"


def test_percentile_ranges_lie_inside_minmax_and_some_are_tighter(tiny_onnx, calib):
    mm = compute_ranges(tiny_onnx, calib.images, "minmax")
    pc = compute_ranges(tiny_onnx, calib.images, "percentile")
    assert mm.keys() == pc.keys() and mm
    for k in mm:
        assert mm[k][0] - 1e-6 <= pc[k][0] <= pc[k][1] <= mm[k][1] + 1e-6, k
    tighter = [k for k in mm if pc[k][1] < mm[k][1] - 1e-4 or pc[k][0] > mm[k][0] + 1e-4]
    assert len(tighter) >= len(mm) // 4, f"percentile is MinMax on {len(mm) - len(tighter)} of {len(mm)} tensors"


def test_range_cache_misses_when_the_onnx_or_the_images_change(tiny_onnx, calib, tmp_path):
    cache = tmp_path / "ranges.json"
    first, info = cached_ranges(tiny_onnx, calib, "minmax", False, cache)
    assert not info["hit"] and cached_ranges(tiny_onnx, calib, "minmax", False, cache)[1]["hit"]
    # other images of the same shape and count: must recalibrate
    brighter = CalibrationSet(np.clip(calib.images * 0.5 + 0.5, 0, 1).astype(np.float32), calib.source)
    ranges2, info2 = cached_ranges(tiny_onnx, brighter, "minmax", False, cache)
    assert not info2["hit"] and ranges2 != first
    # another ONNX file (a byte changed in its metadata: same graph, other file): must recalibrate
    other = tmp_path / "other.onnx"
    shutil.copy(tiny_onnx, other)
    m = onnx.load(str(other))
    m.doc_string = "changed"
    onnx.save(m, str(other))
    assert not cached_ranges(other, brighter, "minmax", False, cache)[1]["hit"]
