"""`udc-edge doctor` and the full bring-your-own path on the tiny obstacle models of
``tests/byo_obstacles.py``: each either goes export -> build fp32/int8 -> run, or gets the
documented diagnosis (docs/byo.md)."""

from __future__ import annotations

import json
import sys

import byo_obstacles as obstacles
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.metrics import psnr
from udc_edge.engines import load_engine
from udc_edge.export.byo import cpu_only, load_byo
from udc_edge.export.onnx_export import example_inputs

runner = CliRunner()
SIZE = ["--height", "32", "--width", "32"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A safetensors file per obstacle model (seeded random init), as a user would bring."""
    folder = tmp_path_factory.mktemp("byo-weights")
    out = {}
    for name in ("FFTNet", "UnfoldKPN", "TupleNet", "PsfCodeNet", "CudaNet", "FixedGridNet"):
        torch.manual_seed(0)
        with cpu_only():
            net = getattr(obstacles, name)()
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / f"{name}.safetensors"))
        out[name] = str(folder / f"{name}.safetensors")
    return out


@pytest.fixture
def clean_modules():
    for n in ("byo_cudaext", "udc_fused_cuda_ops"):
        sys.modules.pop(n, None)
    yield
    for n in ("byo_cudaext", "udc_fused_cuda_ops"):
        sys.modules.pop(n, None)


def doctor(*args: str, tmp_path=None):
    extra = ["--out", str(tmp_path)] if tmp_path is not None else []
    return runner.invoke(app, ["-q", "--threads", "1", "doctor", *args, *SIZE, "--runs", "2", *extra])


def full_path(tmp_path, model: str, weights: str, *export_args: str, size=(32, 40), **forward_kwargs):
    """export -> build fp32 and int8 -> load each engine and run it against eager torch."""
    onnx_path = tmp_path / "m.onnx"
    res = runner.invoke(app, ["--threads", "1", "export", model, "--weights", weights, *SIZE, "--out", str(onnx_path),
                              *export_args])
    assert res.exit_code == 0, res.output
    for prec in ("fp32", "int8"):
        res = runner.invoke(app, ["-q", "build", str(onnx_path), "--out", str(tmp_path / f"{prec}.onnx"),
                                  "--precision", prec, "--calib", "synth:poled", "--calib-count", "6",
                                  "--threads", "1"])
        assert res.exit_code == 0, res.output
    net, _ = load_byo(model, weights=weights)
    x = example_inputs(("input",), 1, *size, seed=3)[0]  # a synthetic UDC capture, like the calibration set
    with torch.no_grad(), cpu_only():
        ref = net(torch.from_numpy(x), **{k: torch.from_numpy(v) for k, v in forward_kwargs.items()})
    ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
    out32 = load_engine(tmp_path / "fp32.onnx", threads=1)(x)
    out8 = load_engine(tmp_path / "int8.onnx", threads=1)(x)
    np.testing.assert_allclose(out32, ref, atol=1e-4)
    assert psnr(np.clip(out8[0], 0, 1), np.clip(out32[0], 0, 1)) > 30
    manifest = json.loads((tmp_path / "int8.onnx.json").read_text())
    assert manifest["precision"] == "int8" and "speedup" in manifest["summary"]
    return res.output, manifest


def test_doctor_fft_layer(tmp_path):
    res = doctor("byo_obstacles:FFTNet", tmp_path=tmp_path)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "doctor.json").read_text())
    assert rep["ok"] and rep["chosen"]["exporter"] == "dynamo" and rep["dynamic"]["ok"]
    ts = next(e for e in rep["exporters"] if e["exporter"] == "torchscript")
    assert not ts["ok"] and "fft_rfft2" in ts["error"]
    dft = next(f for f in rep["findings"] if f["op_type"] == "DFT")
    assert dft["count"] == 4 and dft["tensorrt"] is False and any("byo_obstacles.py:" in s for s in dft["layers"])
    assert rep["int8"]["per_op_type"]["Conv"]["nodes"] == 2 and "DFT" in rep["int8"]["float_ops"]
    assert "| DFT | 4 |" in (tmp_path / "doctor.md").read_text()
    # TensorRT as the target: the DFT is a blocker, with the version that parses it.
    res = doctor("byo_obstacles:FFTNet", "--backend", "trt")
    assert res.exit_code == 1 and "TensorRT's ONNX parser rejects DFT x4 (TensorRT >= 11.2 only)" in res.output


@pytest.mark.slow
def test_fft_full_path_reuses_recorded_session_options(tmp_path, weights):
    _, manifest = full_path(tmp_path, "byo_obstacles:FFTNet", weights["FFTNet"], "--opset", "20")
    assert manifest["session_options"] == {"enable_mem_pattern": False, "enable_mem_reuse": False}
    assert json.loads((tmp_path / "fp32.onnx.json").read_text())["session_options"] == manifest["session_options"]


def test_doctor_unfold_kernel_prediction_names_the_indexing_layers(tmp_path, weights):
    res = doctor("byo_obstacles:UnfoldKPN", "--weights", weights["UnfoldKPN"], tmp_path=tmp_path)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "doctor.json").read_text())
    gather = next(f for f in rep["findings"] if f["op_type"] == "Gather")
    assert gather["count"] == 4 and any("[unfold" in s and "byo_obstacles.py:" in s for s in gather["layers"])
    assert gather["time_share"] is not None and {"Gather", "Range"} <= set(rep["int8"]["float_ops"])
    assert "Unfold" in next(e["error"] for e in rep["exporters"] if e["exporter"] == "torchscript")
    assert "--exporter dynamo" in rep["export_command"]


@pytest.mark.slow
def test_unfold_full_path(tmp_path, weights):
    _, manifest = full_path(tmp_path, "byo_obstacles:UnfoldKPN", weights["UnfoldKPN"])
    assert manifest["session_options"] == {}


def test_doctor_tuple_output_and_full_path(tmp_path, weights):
    res = doctor("byo_obstacles:TupleNet")
    assert res.exit_code == 0 and "export with --output-index 0" in res.output
    res = runner.invoke(app, ["export", "byo_obstacles:TupleNet", "--weights", weights["TupleNet"], *SIZE,
                              "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code == 2 and "--output-index" in res.output and not (tmp_path / "x.onnx").exists()
    full_path(tmp_path, "byo_obstacles:TupleNet", weights["TupleNet"], "--output-index", "0")


def test_doctor_psf_code_input_and_full_path(tmp_path, weights):
    res = doctor("byo_obstacles:PsfCodeNet")
    assert res.exit_code == 1 and "--extra-input psf_code=SHAPE" in res.output
    code = np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 8)
    np.save(tmp_path / "code.npy", code)
    extra = f"psf_code=1x8:{tmp_path / 'code.npy'}"
    res = doctor("byo_obstacles:PsfCodeNet", "--extra-input", extra)
    assert res.exit_code == 0, res.output
    full_path(tmp_path, "byo_obstacles:PsfCodeNet", weights["PsfCodeNet"], "--extra-input", extra, psf_code=code)


def test_doctor_hard_coded_cuda_and_full_path(tmp_path, weights):
    res = doctor("byo_obstacles:CudaNet", tmp_path=tmp_path)
    assert res.exit_code == 0, res.output
    calls = json.loads((tmp_path / "doctor.json").read_text())["load"]["cuda_calls"]
    assert [c["phase"] for c in calls] == ["init", "init", "forward"] and calls[2]["code"] == "x = x.cuda()"
    full_path(tmp_path, "byo_obstacles:CudaNet", weights["CudaNet"])


def test_baked_input_size_needs_fixed_shape(tmp_path, weights):
    res = doctor("byo_obstacles:FixedGridNet")
    assert res.exit_code == 0 and "dynamic H/W is impossible" in res.output and "--fixed-shape" in res.output
    res = runner.invoke(app, ["export", "byo_obstacles:FixedGridNet", "--weights", weights["FixedGridNet"], *SIZE,
                              "--out", str(tmp_path / "g.onnx")])
    assert res.exit_code == 1 and "--fixed-shape --height 32 --width 32" in res.output
    full_path(tmp_path, "byo_obstacles:FixedGridNet", weights["FixedGridNet"], "--fixed-shape", size=(32, 32))


def test_doctor_cuda_only_import(tmp_path, clean_modules, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = doctor("byo_cudaext:ExtNet")
    assert res.exit_code == 1 and "imports 'udc_fused_cuda_ops' at module level" in res.output
    assert "--stub-module udc_fused_cuda_ops" in res.output
    res = doctor("byo_cudaext:ExtNet", "--stub-module", "udc_fused_cuda_ops")
    assert res.exit_code == 0, res.output
    assert list(tmp_path.iterdir()) == []  # no temp files (calibration, profiles) left in the cwd


def test_doctor_unloadable_model_is_a_blocker():
    res = doctor("byo_obstacles:Nope")
    assert res.exit_code == 1 and "has no class 'Nope'" in res.output
