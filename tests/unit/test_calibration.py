"""Calibration sets, cached ranges, Q/DQ targets and automatic exclusion."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from udc_edge.calibration.dataset import load_calibration_set
from udc_edge.calibration.qdq import (
    auto_exclude,
    exclude_until,
    fidelity,
    layer_sensitivity,
    prepare,
    quantizable_nodes,
    quantize_bytes,
)
from udc_edge.calibration.ranges import cached_ranges, compute_ranges
from udc_edge.core.errors import DataError, UsageError
from udc_edge.engines.build import _runner


@pytest.fixture(scope="module")
def calib():
    return load_calibration_set("synth:toled", count=6, size=64)


def test_calibration_images_are_real_and_reproducible(calib):
    again = load_calibration_set("synth:toled", count=6, size=64)
    assert calib.images.shape == (6, 3, 64, 64) and calib.sha256 == again.sha256
    assert 0 <= calib.images.min() and calib.images.max() <= 1 and calib.images.std() > 0.02


def test_calibration_folder_without_images_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_calibration_set(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_calibration_set(tmp_path / "missing")


def test_cache_reuse_gives_the_identical_model(tiny_onnx, calib, tmp_path):
    cache = tmp_path / "c.json"
    r1, i1 = cached_ranges(tiny_onnx, calib, "minmax", False, cache)
    r2, i2 = cached_ranges(tiny_onnx, calib, "minmax", False, cache)
    assert not i1["hit"] and i2["hit"] and r1 == r2
    assert json.loads(cache.read_text())["key"]["onnx_sha256"] == i1["onnx_sha256"]
    assert quantize_bytes(tiny_onnx, r1, "cpu") == quantize_bytes(tiny_onnx, r2, "cpu")
    # Another method (or another ONNX, or other images) does not reuse the cache.
    _, i3 = cached_ranges(tiny_onnx, calib, "percentile", False, cache)
    assert not i3["hit"]


def test_entropy_uses_a_real_histogram(tiny_onnx, calib):
    mm = compute_ranges(tiny_onnx, calib.images, "minmax")
    ent = compute_ranges(tiny_onnx, calib.images, "entropy")
    assert mm.keys() == ent.keys()
    tighter = sum(ent[k][1] < mm[k][1] - 1e-6 for k in mm)
    assert tighter >= len(mm) // 4, "entropy thresholds should clip outliers that min-max keeps"
    assert all(ent[k][1] <= mm[k][1] + 1e-6 and ent[k][0] >= mm[k][0] - 1e-6 for k in mm)


def _zero_points(model_bytes: bytes) -> list[np.ndarray]:
    m = onnx.load_from_string(model_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]


def test_targets_make_the_right_qdq(tiny_onnx, calib):
    ranges = compute_ranges(tiny_onnx, calib.images, "minmax", symmetric=True)
    trt = _zero_points(quantize_bytes(tiny_onnx, ranges, "tensorrt"))
    assert trt and all(z.dtype == np.int8 and not z.any() for z in trt)  # symmetric, zero-point 0
    cpu = _zero_points(quantize_bytes(tiny_onnx, compute_ranges(tiny_onnx, calib.images, "minmax"), "cpu"))
    assert cpu and all(z.dtype == np.uint8 for z in cpu)
    q = onnx.load_from_string(quantize_bytes(tiny_onnx, ranges, "cpu"))
    inits = {i.name for i in q.graph.initializer}
    weight_dq = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    users = {n.op_type for n in q.graph.node if weight_dq & set(n.input)}
    assert weight_dq and users <= {"Conv", "ConvTranspose", "MatMul", "Gemm"}  # only compute ops get int8 weights
    with pytest.raises(UsageError, match="unknown nodes"):
        quantize_bytes(tiny_onnx, ranges, "cpu", exclude=("no_such_node",))


def test_auto_exclude_keeps_sensitive_layers_in_float(tiny_onnx, calib):
    ranges = compute_ranges(tiny_onnx, calib.images, "minmax")
    run = _runner(1)
    held = calib.images[-2:]
    ref = run(tiny_onnx.read_bytes(), held)
    full = fidelity(run, quantize_bytes(tiny_onnx, ranges, "cpu"), held, ref)
    res = auto_exclude(tiny_onnx, ranges, "cpu", run, held, ref, min_fidelity=full + 3)
    assert res.met and res.fidelity_db >= full + 3
    assert 1 <= len(res.excluded) < len(quantizable_nodes(onnx.load(str(tiny_onnx))))
    assert all("dB vs FP32" in e["reason"] for e in res.excluded)
    # The first excluded layer is the one that hurt most when quantised alone.
    assert res.excluded[0]["alone_db"] == pytest.approx(min(res.sensitivity.values()), abs=0.01)


def test_robust_sensitivity_is_the_worse_of_clean_and_attacked_and_both_must_meet_the_target(tiny_onnx, calib):
    """One definition of a sensitive layer: with attacked images, each layer's value is the lower of
    its clean and attacked PSNR; the search stops only when clean AND attacked fidelity meet the target."""
    ranges = compute_ranges(tiny_onnx, calib.images, "minmax")
    run, src = _runner(1), prepare(tiny_onnx)
    held = calib.images[-2:]
    adv = np.clip(held + np.random.default_rng(0).uniform(-8 / 255, 8 / 255, held.shape), 0, 1).astype(np.float32)
    ref, ref_adv = run(tiny_onnx.read_bytes(), held), run(tiny_onnx.read_bytes(), adv)
    clean = layer_sensitivity(src, ranges, "cpu", run, held, ref)
    attacked = layer_sensitivity(src, ranges, "cpu", run, adv, ref_adv)
    robust = layer_sensitivity(src, ranges, "cpu", run, held, ref, (adv, ref_adv))
    assert robust == {n: min(clean[n], attacked[n]) for n in clean}
    # scripted trials: clean passes from the first group, attacked only once 4 layers are in float
    sens = {f"n{i}": float(i) for i in range(8)}
    res = exclude_until(sens, lambda ex: (ex, 50.0, 40.0 if len(ex) < 4 else 46.0), min_fidelity=45.0)
    assert res.met and len(res.excluded) == 4 and [t["excluded"] for t in res.trials] == [1, 2, 4]
    assert res.attacked_db == 46.0 and "worse of clean and attacked" in res.excluded[0]["reason"]
    res = exclude_until(sens, lambda ex: (ex, 50.0, None), min_fidelity=45.0)
    assert res.met and len(res.excluded) == 1 and "(clean;" in res.excluded[0]["reason"]


def test_quantising_a_prepared_model_matches_the_path_and_leaves_it_unchanged(tiny_onnx):
    """auto_exclude/doctor prepare the model once and quantise copies: same bytes as from the
    file, and the prepared model is not rewritten by the quantiser."""
    from udc_edge.calibration.qdq import prepare

    calib = load_calibration_set("synth:toled", 4, 32)
    ranges = compute_ranges(tiny_onnx, calib.images, "minmax")
    source = prepare(tiny_onnx)
    before = source.SerializeToString()
    node = quantizable_nodes(source)[0]
    for kw in ({}, {"only": (node,)}, {"exclude": (node,)}):
        assert quantize_bytes(source, ranges, "cpu", **kw) == quantize_bytes(tiny_onnx, ranges, "cpu", **kw)
    assert source.SerializeToString() == before
