"""Engines: ORT FP32/INT8 builds, manifests, input checks, tiling, Polygraphy agreement."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from udc_edge.core.errors import BackendUnavailableError, EngineError, InputError, UsageError
from udc_edge.core.metrics import psnr
from udc_edge.core.tiling import run_tiled
from udc_edge.engines import load_engine
from udc_edge.engines.build import build_engine
from udc_edge.engines.manifest import manifest_path
from udc_edge.engines.spec import BuildSpec, ShapeProfile
from udc_edge.engines.torch_ref import TorchEngine


@pytest.fixture(scope="module")
def engines(tiny_onnx, tmp_path_factory):
    d = tmp_path_factory.mktemp("eng")
    fp32 = build_engine(tiny_onnx, d / "fp32.onnx", BuildSpec())
    int8 = build_engine(tiny_onnx, d / "int8.onnx", BuildSpec(precision="int8", calib="synth:toled", calib_count=8,
                                                              calib_size=64, calib_method="minmax", threads=1))
    return d, fp32, int8


def test_int8_engine_stays_close_to_fp32_and_to_ground_truth(engines, heldout, tiny_restorer):
    d, fp32_rep, int8_rep = engines
    assert fp32_rep.precision == "fp32" and int8_rep.precision == "int8"
    assert int8_rep.fidelity_db is not None and int8_rep.fidelity_db > 35
    ref = TorchEngine(tiny_restorer)
    with load_engine(d / "fp32.onnx") as f32, load_engine(d / "int8.onnx") as i8:
        for x, gt in heldout:
            y_ref, y32, y8 = ref(x)[0].transpose(1, 2, 0), f32(x)[0].transpose(1, 2, 0), i8(x)[0].transpose(1, 2, 0)
            assert psnr(y32, y_ref) > 60
            assert psnr(y8, y32) > 35
            assert psnr(y8, gt) > psnr(y32, gt) - 0.5  # INT8 loses little against ground truth


def test_manifest_records_the_build(engines, tiny_onnx):
    d, _, _ = engines
    m = json.loads(manifest_path(d / "int8.onnx").read_text())
    assert m["backend"] == "onnxruntime" and m["precision"] == "int8" and m["requested_precision"] == "int8"
    assert m["calibration"]["method"] == "minmax" and m["calibration"]["target"] == "cpu"
    assert len(m["source_onnx_sha256"]) == 64 and m["multiple"] == 4
    assert "fidelity_db" in m["summary"] and "speedup" in m["summary"]


def test_altered_engine_or_missing_manifest_is_refused(engines, tmp_path):
    d, _, _ = engines
    data = (d / "fp32.onnx").read_bytes()
    (tmp_path / "e.onnx").write_bytes(data[:-10] + b"0123456789")
    (tmp_path / "e.onnx.json").write_text(manifest_path(d / "fp32.onnx").read_text())
    with pytest.raises(EngineError, match="altered"):
        load_engine(tmp_path / "e.onnx")
    (tmp_path / "bare.onnx").write_bytes(data)
    with pytest.raises(EngineError, match="no manifest"):
        load_engine(tmp_path / "bare.onnx")


def test_engine_refuses_bad_inputs(engines):
    d, _, _ = engines
    with load_engine(d / "fp32.onnx") as e:
        with pytest.raises(EngineError, match="float32"):
            e(np.zeros((1, 3, 16, 16), np.float64))
        with pytest.raises(EngineError, match="4 dims"):
            e(np.zeros((3, 16, 16), np.float32))
        with pytest.raises(EngineError, match="3 channels"):
            e(np.zeros((1, 1, 16, 16), np.float32))
        assert e(np.zeros((1, 3, 17, 23), np.float32)).shape == (1, 3, 17, 23)  # padded and cropped


def test_shape_profile_is_enforced(tiny_onnx, tmp_path):
    prof = ShapeProfile.from_strings("1x3x16x16", "1x3x32x32", "1x3x64x64")
    build_engine(tiny_onnx, tmp_path / "p.onnx", BuildSpec(profile=prof))
    with load_engine(tmp_path / "p.onnx") as e:
        e(np.zeros((1, 3, 64, 64), np.float32))
        with pytest.raises(EngineError, match="outside the engine's profile"):
            e(np.zeros((1, 3, 65, 64), np.float32))


def test_tiled_engine_matches_untiled(engines, heldout):
    d, _, _ = engines
    x = np.concatenate([np.concatenate([h[0] for h in heldout], axis=3)] * 2, axis=2)  # 128 x 192
    with load_engine(d / "fp32.onnx") as e:
        whole = e(x)
        tiled = run_tiled(lambda t: torch.from_numpy(e(t.numpy())), torch.from_numpy(x), tile=64, overlap=16).numpy()
    assert psnr(tiled[0], whole[0]) > 40


def test_bad_build_requests(tiny_onnx, tmp_path):
    with pytest.raises(UsageError, match="fp16"):
        BuildSpec(precision="fp16")
    with pytest.raises(UsageError, match="--calib"):
        BuildSpec(precision="int8")
    with pytest.raises(UsageError, match="min <= opt <= max"):
        ShapeProfile.from_strings("1x3x64x64", "1x3x32x32", "1x3x128x128")
    (tmp_path / "bad.onnx").write_bytes(tiny_onnx.read_bytes()[: 200])
    with pytest.raises(EngineError, match="not a valid ONNX"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "x.onnx", BuildSpec())
    assert not (tmp_path / "x.onnx").exists()


def test_prequantised_int8_build_of_a_plain_graph_asks_for_calibration(tiny_onnx, tmp_path):
    """A bundle's --precision int8 skips --calib, but a graph without Q/DQ still needs it: a
    one-line UsageError, not a read of a calibration folder named "None"."""
    spec = BuildSpec(precision="int8", prequantised=True)
    with pytest.raises(UsageError, match="no Q/DQ nodes.*calibration data"):
        build_engine(tiny_onnx, tmp_path / "x.onnx", spec)
    assert not (tmp_path / "x.onnx").exists()


def test_wrong_input_rank_is_refused(tmp_path):
    lin = torch.nn.Linear(4, 4)
    torch.onnx.export(lin, (torch.zeros(1, 4),), str(tmp_path / "lin.onnx"), dynamo=False, input_names=["input"])
    with pytest.raises(InputError, match="rank 2"):
        build_engine(tmp_path / "lin.onnx", tmp_path / "x.onnx", BuildSpec())


def test_tensorrt_backend_without_tensorrt_says_how_to_install(tiny_onnx, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not importable, even on a GPU machine
    with pytest.raises(BackendUnavailableError, match="udc-edge\\[trt\\]"):
        build_engine(tiny_onnx, tmp_path / "x.engine", BuildSpec(backend="trt", precision="fp16"))


def test_polygraphy_comparator_agrees_with_our_numbers(engines, heldout):
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, CompareFunc

    d, _, _ = engines
    x = heldout[0][0]
    runners = [OnnxrtRunner(SessionFromOnnx(str(d / "fp32.onnx")), name="fp32"),
               OnnxrtRunner(SessionFromOnnx(str(d / "int8.onnx")), name="int8")]
    results = Comparator.run(runners, data_loader=[{"input": x}])
    acc = Comparator.compare_accuracy(results, compare_func=CompareFunc.simple(atol=1.0))
    # Polygraphy >= 0.50 returns a list of per-check results; older versions one dict.
    first = acc if hasattr(acc, "values") else acc[0]
    poly = next(iter(first.values()))[0]["output"].max_absdiff
    with load_engine(d / "fp32.onnx") as f32, load_engine(d / "int8.onnx") as i8:
        ours = float(np.abs(f32(x) - i8(x)).max())
    assert poly == pytest.approx(ours, rel=1e-5, abs=1e-7)
