"""Bring-your-own wrappers: extra inputs, output selector, the .cuda() patch, import
diagnostics, the safer-session retry, and the static TensorRT operator table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import byo_obstacles as obstacles
import numpy as np
import onnx
import pytest
import torch

from udc_edge.core.errors import ExportError, InputError, ModelError, UsageError
from udc_edge.engines.tensorrt_ops import tensorrt_support
from udc_edge.export import byo
from udc_edge.export.byo import ExtraInput, select_output
from udc_edge.export.onnx_export import ExportSpec, export_onnx, short_error
from udc_edge.export.onnxrt import make_session, session_options

SMALL = {"height": 24, "width": 24, "parity_images": 1}


@pytest.fixture
def clean_modules():
    """Forget the CUDA-extension test module and its stub before and after a test."""
    names = ("byo_cudaext", "udc_fused_cuda_ops", "colorsys")
    for n in names:
        sys.modules.pop(n, None)
    yield
    for n in names:
        sys.modules.pop(n, None)


def test_extra_input_parsing():
    e = ExtraInput.parse("psf_code=1x8:0.5")
    assert (e.name, e.shape, e.value, e.file) == ("psf_code", (1, 8), 0.5, None)
    assert torch.equal(e.tensor(), torch.full((1, 8), 0.5))
    assert ExtraInput.parse("code=2x3").value == 0.0
    assert ExtraInput.parse("code=1x4:codes/a.npy").file == "codes/a.npy"
    for bad in ("psf_code", "1x8", "psf code=1x8", "c=1xa", "c=0x4", "c=1x4:abc"):
        with pytest.raises(UsageError, match="--extra-input"):
            ExtraInput.parse(bad)


def test_extra_input_from_npy_is_checked_and_never_unpickled(tmp_path):
    np.save(tmp_path / "code.npy", np.arange(8, dtype=np.float64).reshape(1, 8))
    t = ExtraInput.parse(f"psf_code=1x8:{tmp_path / 'code.npy'}").tensor()
    assert t.dtype == torch.float32 and t[0, 7] == 7
    with pytest.raises(InputError, match=r"shape \(1, 8\), not \(8,\)"):
        ExtraInput.parse(f"psf_code=8:{tmp_path / 'code.npy'}").tensor()
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="not a plain .npy"):
        ExtraInput.parse(f"psf_code=1:{tmp_path / 'obj.npy'}").tensor()
    with pytest.raises(InputError, match="does not exist"):
        ExtraInput.parse(f"psf_code=1x8:{tmp_path / 'missing.npy'}").tensor()


def test_output_selector():
    a, b = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4)
    assert select_output(a, None) is a and select_output((a, b), 1) is b
    with pytest.raises(UsageError, match=r"\[0\] tensor \(1, 3, 8, 8\), \[1\] tensor \(1, 3, 4, 4\).*--output-index"):
        select_output((a, b), None)
    with pytest.raises(UsageError, match="--output-index 2"):
        select_output((a, b), 2)
    with pytest.raises(UsageError, match="single tensor"):
        select_output(a, 1)


def test_extra_inputs_must_match_forward():
    net = obstacles.PsfCodeNet()
    with pytest.raises(UsageError, match="needs psf_code.*--extra-input psf_code=SHAPE"):
        byo.wrap(net, cpu_patch=True)
    assert byo.wrap(net) is net  # nothing asked: extra arguments stay graph inputs (a purifier's noise)
    with pytest.raises(UsageError, match="no such argument.*psf_code"):
        byo.wrap(net, extra_inputs=(ExtraInput.parse("psf=1x8"), ExtraInput.parse("psf_code=1x8")))


def test_cpu_only_records_each_cuda_call_site_and_restores_torch():
    original = torch.Tensor.cuda
    with byo.cpu_only() as calls:
        net = obstacles.CudaNet()
        y = net(torch.rand(1, 3, 8, 8))
        net(torch.rand(1, 3, 8, 8))  # the same site twice is recorded once
    assert torch.Tensor.cuda is original and y.device.type == "cpu"
    codes = [c["code"] for c in calls]
    assert codes == ['self.register_buffer("scale", torch.full((1, 3, 1, 1), 0.5).cuda())', "self.cuda()",
                     "x = x.cuda()"]
    assert all(c["where"].startswith(obstacles.__file__) for c in calls)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a CPU-only torch to see the failure")
def test_load_byo_patches_hard_coded_cuda():
    with pytest.raises(AssertionError):
        obstacles.CudaNet()  # what the user sees without udc-edge
    net, rep = byo.load_byo("byo_obstacles:CudaNet")
    assert not net.training and [c["phase"] for c in rep.cuda_calls] == ["init", "init"]
    lines = Path(obstacles.__file__).read_text().splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "0.5).cuda()" in t)
    assert rep.cuda_calls[0]["where"] == f"{obstacles.__file__}:{line}"


def test_missing_cuda_extension_is_named_with_its_import_line(clean_modules):
    with pytest.raises(ModelError, match=r"imports 'udc_fused_cuda_ops' at module level.*byo_cudaext\.py:\d+: "
                                         r"import udc_fused_cuda_ops.*--stub-module udc_fused_cuda_ops"):
        byo.load_byo("byo_cudaext:ExtNet")
    with pytest.raises(ModelError, match="not on PYTHONPATH"):
        byo.load_byo("no_such_package_xyz.nets:Net")


def test_stub_module_lets_the_class_load_and_reports_heavy_imports(clean_modules, monkeypatch):
    monkeypatch.setattr(byo, "HEAVY_MODULES", ("colorsys",))
    net, rep = byo.load_byo("byo_cudaext:ExtNet", stub_modules=("udc_fused_cuda_ops",))
    assert rep.stubbed == ["udc_fused_cuda_ops"] and rep.heavy_modules == ["colorsys"]
    assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
    fused, _ = byo.load_byo("byo_cudaext:ExtNet", {"use_fused": True}, stub_modules=("udc_fused_cuda_ops",))
    with pytest.raises(ModelError, match="udc_fused_cuda_ops.restore was called.*only a stub"):
        fused(torch.rand(1, 3, 8, 8))


def test_tuple_output_exports_with_output_index(tmp_path):
    with pytest.raises(UsageError, match="--output-index"):
        export_onnx(obstacles.TupleNet(), tmp_path / "t.onnx", ExportSpec(**SMALL))
    assert not (tmp_path / "t.onnx").exists()
    rep = export_onnx(obstacles.TupleNet(), tmp_path / "t.onnx", ExportSpec(output_index=0, **SMALL))
    model = onnx.load(str(tmp_path / "t.onnx"))
    assert len(model.graph.output) == 1 and rep.output_index == 0
    assert {p.key: p.value for p in model.metadata_props}["udc_edge.output_index"] == "0"


def test_extra_input_is_frozen_into_the_graph(tmp_path):
    code = np.linspace(-1, 1, 8, dtype=np.float32).reshape(1, 8)
    np.save(tmp_path / "code.npy", code)
    net = obstacles.PsfCodeNet().eval()
    extra = (ExtraInput.parse(f"psf_code=1x8:{tmp_path / 'code.npy'}"),)
    rep = export_onnx(net, tmp_path / "p.onnx", ExportSpec(extra_inputs=extra, **SMALL))
    sess = make_session(str(tmp_path / "p.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["input"]
    x = np.random.default_rng(0).random((1, 3, 20, 28), dtype=np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x), torch.from_numpy(code)).numpy()
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], ref, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "p.onnx")).metadata_props}
    assert json.loads(meta["udc_edge.extra_inputs"])[0]["shape"] == [1, 8] and "psf_code (1, 8)" in rep.summary()


def test_fft_layer_falls_back_to_dynamo_and_records_safer_session_options(tmp_path):
    rep = export_onnx(obstacles.FFTNet(), tmp_path / "f.onnx", ExportSpec(opset=20, **SMALL))
    assert rep.exporter == "dynamo" and "fft_rfft2" in rep.fallback_reason
    assert rep.attempts[0]["exporter"] == "torchscript" and not rep.attempts[0]["ok"]
    # The inverse DFT fails under ORT's default buffer reuse; the retry found what works.
    assert rep.session_options == {"enable_mem_pattern": False, "enable_mem_reuse": False}
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "f.onnx")).metadata_props}
    assert json.loads(meta["udc_edge.session_options"]) == rep.session_options
    assert "torchscript exporter failed" in rep.summary() and "session options" in rep.summary()


def test_baked_input_size_is_diagnosed_and_fixed_shape_works(tmp_path):
    with pytest.raises(ExportError, match=r"not at a second size.*--fixed-shape --height 24 --width 24"):
        export_onnx(obstacles.FixedGridNet(), tmp_path / "g.onnx", ExportSpec(**SMALL))
    assert not (tmp_path / "g.onnx").exists()
    rep = export_onnx(obstacles.FixedGridNet(), tmp_path / "g.onnx", ExportSpec(dynamic=False, **SMALL))
    assert rep.exporter == "torchscript" and not rep.dynamic


def test_forward_failure_names_the_user_line(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            return x.view(-1, 7)  # the failing line

    with pytest.raises(ModelError, match=r"Broken.forward fails.*test_byo\.py:\d+: return x\.view"):
        export_onnx(Broken(), tmp_path / "b.onnx", ExportSpec(**SMALL))


def test_ort_errors_are_shortened_to_node_and_message():
    exc = RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running DFT node. "
                       "Name:'node_DFT_5' Status Message: /src/op_kernel.cc:87 virtual OrtValue* f(int) "
                       "[ONNXRuntimeError] : 1 : FAIL : Shape mismatch attempting to re-use buffer. {1} != {2}")
    assert short_error(exc) == "DFT node 'node_DFT_5': Shape mismatch attempting to re-use buffer. {1} != {2}"


def test_recorded_optimisation_level_is_accepted_by_name():
    import onnxruntime as ort

    so = session_options(options={"graph_optimization_level": "ORT_ENABLE_BASIC", "enable_mem_reuse": False})
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC and not so.enable_mem_reuse


def test_tensorrt_operator_table():
    assert tensorrt_support("Conv").supported is True
    dft = tensorrt_support("DFT")
    assert dft.supported is False and "11.2" in dft.note
    assert "half_pixel" in tensorrt_support("Resize").note
    assert tensorrt_support("LayerNormalization").note == "TensorRT >= 8.6 only"
    assert tensorrt_support("MyCustomOp").supported is None
