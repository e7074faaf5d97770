"""Real TensorRT tests: build fp32/fp16/int8 engines of a tiny restorer-like model on the GPU
and compare them with ONNX Runtime on the CPU.

Marked ``gpu``; they skip themselves unless ``udc_edge.engines.tensorrt.is_available()``
(tensorrt importable and a CUDA device usable). The PSNR bounds are our expectations for
a 2-conv model on smooth images, written before any run on a GPU (see docs/tensorrt.md).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from udc_edge.core.errors import EngineError
from udc_edge.core.fileio import sha256_file
from udc_edge.engines import tensorrt as trt_backend
from udc_edge.engines.manifest import Manifest, write_manifest

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not trt_backend.is_available(), reason="needs TensorRT and a CUDA GPU")]

PROFILE = {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}
# minimum PSNR (dB) of the TensorRT output against ONNX Runtime FP32 on the same input
BOUNDS = {"fp32": 60.0, "fp16": 40.0, "int8": 30.0}


def smooth_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth images in [0, 1] (upsampled coarse noise): closer to photos than white noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 3, h // 8 + 1, w // 8 + 1), dtype=np.float32)
    img = np.kron(coarse, np.ones((1, 1, 8, 8), np.float32))[:, :, :h, :w]
    return np.ascontiguousarray(img)


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    mse = float(np.mean((ref.astype(np.float64) - out.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else min(100.0, 10 * np.log10(1.0 / mse))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """fp32 ONNX of a tiny residual conv net, and its symmetric int8 Q/DQ version (ORT quantiser)."""
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    d = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.b = torch.nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            return x + 0.1 * self.b(torch.relu(self.a(x)))

    fp32 = d / "tiny.onnx"
    axes = {n: {0: "n", 2: "h", 3: "w"} for n in ("input", "output")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Tiny().eval(), (torch.rand(1, 3, 32, 32),), str(fp32), input_names=["input"],
                          output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": smooth_images(1, 32, 32, s)} for s in range(16)])

        def get_next(self):
            return next(self.it, None)

    qdq = d / "tiny_qdq.onnx"
    quantize_static(str(fp32), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "QuantizeBias": False})  # TensorRT rejects int32 bias DQ
    return {"dir": d, "fp32": fp32, "int8": qdq}


def ort_run(onnx_path, x: np.ndarray) -> np.ndarray:
    from udc_edge.export.onnxrt import make_session

    return make_session(onnx_path).run(None, {"input": x})[0]


def build(models, precision: str):
    """Build an engine with its manifest through build_engine, the path udc-edge build takes
    (INT8 from the ORT-quantised Q/DQ model, as from a bundle). Returns (path, build info)."""
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.manifest import read_manifest
    from udc_edge.engines.spec import BuildSpec, ShapeProfile

    src = models["int8"] if precision == "int8" else models["fp32"]
    path = models["dir"] / f"tiny_{precision}.engine"
    profile = ShapeProfile(*(tuple(PROFILE[k]) for k in ("min", "opt", "max")))
    build_engine(src, path, BuildSpec(backend="trt", precision=precision, profile=profile,
                                      prequantised=precision == "int8"))
    return path, read_manifest(path).build_options


@pytest.fixture(scope="module")
def engines(models):
    return {p: build(models, p) for p in ("fp32", "fp16", "int8")}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trt_engine_matches_onnxruntime_within_psnr_bound(models, engines, precision):
    """Each precision's engine is within its PSNR bound of ORT FP32 (int8 also of ORT on the Q/DQ model)."""
    path, info = engines[precision]
    assert info["tensorrt_version"] == trt_backend.get_version()
    x = smooth_images(1, 32, 32, seed=99)
    with trt_backend.TrtEngine(path) as eng:
        y = eng(x)
    assert y.shape == x.shape and y.dtype == np.float32
    assert psnr(ort_run(models["fp32"], x), y) >= BOUNDS[precision]
    if precision == "int8":
        assert psnr(ort_run(models["int8"], x), y) >= 35.0


def test_trt_dynamic_shapes_two_sizes_and_outside_profile(models, engines):
    """One engine serves two sizes in its profile (matching ORT); a size beyond max is refused."""
    path, _ = engines["fp32"]
    with trt_backend.TrtEngine(path) as eng:
        for shape in ((1, 3, 32, 48), (2, 3, 64, 64)):
            x = smooth_images(shape[0], shape[2], shape[3], seed=sum(shape))
            y = eng(x)
            assert y.shape == x.shape
            assert psnr(ort_run(models["fp32"], x), y) >= BOUNDS["fp32"]
        with pytest.raises(EngineError, match="outside"):
            eng(smooth_images(1, 128, 128, seed=1))


def test_trt_timed_call_reports_sane_cuda_event_times(engines):
    """timed_call gives the same output as a plain call and positive, finite h2d/compute/d2h times."""
    path, _ = engines["fp16"]
    x = smooth_images(1, 64, 64, seed=3)
    with trt_backend.TrtEngine(path) as eng:
        plain = eng(x)
        for _ in range(3):  # warm up
            eng(x)
        y, times = eng.timed_call(x)
    np.testing.assert_array_equal(y, plain)
    assert set(times) == {"h2d_ms", "compute_ms", "d2h_ms"}
    assert all(np.isfinite(v) and 0.0 <= v < 1000.0 for v in times.values())
    assert times["compute_ms"] > 0.0


def test_trt_profile_layers_and_info(engines):
    """profile_layers returns named layers with non-negative mean times; info() describes the I/O."""
    path, _ = engines["fp32"]
    with trt_backend.TrtEngine(path) as eng:
        layers = eng.profile_layers(smooth_images(1, 32, 32, seed=5), runs=3)
        info = eng.info()
    assert layers and all(isinstance(n, str) and op == "" and ms >= 0.0 for n, op, ms in layers)
    assert [i.name for i in info.inputs] == ["input"] and info.outputs[0].dtype == "float32"
    assert info.backend == "tensorrt" and info.extra["cuda"] in ("pycuda", "polygraphy.cuda")


def test_trt_load_engine_dispatches_on_manifest_and_refuses_tampered_version(engines, tmp_path):
    """udc_edge.engines.load_engine opens our engine; a manifest claiming another version is refused."""
    from udc_edge.engines import load_engine

    path, info = engines["fp32"]
    eng = load_engine(path)
    assert isinstance(eng, trt_backend.TrtEngine)
    other = tmp_path / "other.engine"
    other.write_bytes(path.read_bytes())
    write_manifest(other, Manifest(backend="tensorrt", backend_version="7.0.0", precision="fp32",
                                   requested_precision="fp32", engine_sha256=sha256_file(other),
                                   shape_profile=PROFILE, device=info["device"]))
    with pytest.raises(EngineError, match="rebuild"):
        load_engine(other)
