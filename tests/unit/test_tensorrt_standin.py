"""Tests of the TensorRT backend's version branching and checks with a STAND-IN module.

Nothing here runs TensorRT: a fake ``tensorrt`` module (injected into ``sys.modules``) records
the builder calls that ``build_serialized`` makes, so these tests check what we ASK TensorRT
for on 8.6 / 10.3 / 11.0, not what TensorRT does. Real-TensorRT tests are in tests/gpu/.
"""

from __future__ import annotations

import enum
import sys
import types
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from udc_edge.core.errors import BackendUnavailableError, EngineError, UsageError
from udc_edge.core.fileio import sha256_file
from udc_edge.engines import tensorrt as trt_backend
from udc_edge.engines.manifest import Manifest, write_manifest

PROFILE = {"min": [1, 3, 16, 16], "opt": [1, 3, 32, 32], "max": [2, 3, 64, 64]}


# -- the stand-in tensorrt module --------------------------------------------------------------
def make_standin_trt(version: str, parse_ok: bool = True) -> types.ModuleType:
    """A fake ``tensorrt`` (NOT TensorRT) whose enums match ``version`` and which records calls."""
    major = int(version.split(".")[0])
    rec: dict = {"set_flags": [], "cleared_flags": [], "profiles": [], "network_flags": None, "parsed": None,
                 "config_attrs": {}, "pool": None}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.record = rec

    net_members = {"EXPLICIT_BATCH": 0} if major < 10 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    if major >= 11:
        net_members = {"STRONGLY_TYPED": 0}
    flag_members = {"TF32": 7} if major >= 11 else {"FP16": 0, "INT8": 1, "TF32": 7}
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", net_members)
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", flag_members)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", {"LAYER_NAMES_ONLY": 0, "DETAILED": 1})
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, severity: None})
    parser_error = types.SimpleNamespace(desc=lambda: "Unsupported operator FancyOp", node=lambda: 3,
                                         node_name=lambda: "/body/fancy", node_operator=lambda: "FancyOp")

    class Network:
        def __init__(self, flags):
            self.inputs, self.outputs = [], []
            rec["network_flags"] = flags

        num_inputs = property(lambda self: len(self.inputs))
        num_outputs = property(lambda self: len(self.outputs))
        def get_input(self, i):
            return self.inputs[i]
        def get_output(self, i):
            return self.outputs[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.num_errors = network, 0

        def parse_from_file(self, path):
            rec["parsed"] = model = onnx.load(path)

            def tensors(vis):
                return [types.SimpleNamespace(name=v.name, shape=tuple(
                    d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim))
                    for v in vis]

            self.network.inputs, self.network.outputs = tensors(model.graph.input), tensors(model.graph.output)
            self.num_errors = 0 if parse_ok else 1
            return parse_ok

        def get_error(self, i):
            return parser_error

    class Config:
        def set_flag(self, flag):
            return rec["set_flags"].append(flag.name)
        def clear_flag(self, flag):
            return rec["cleared_flags"].append(flag.name)
        def add_optimization_profile(self, profile):
            return None

        def set_memory_pool_limit(self, pool, size):
            rec["pool"] = (pool.name, size)

        def __setattr__(self, name, value):
            rec["config_attrs"][name] = value  # int8_calibrator must never appear here

    profile = types.SimpleNamespace(set_shape=lambda n, lo, opt, hi: rec["profiles"].append(
        (n, list(lo), list(opt), list(hi))))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            return Network(flags)
        def create_builder_config(self):
            return Config()
        def create_optimization_profile(self):
            return profile

        def build_serialized_network(self, network, config):
            return None if trt.fail_build else b"standin-engine"

    trt.fail_build = False
    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


@pytest.fixture
def standin_gpu(monkeypatch):
    """A STAND-IN device probe: one fake GPU, so no CUDA library is touched."""
    monkeypatch.setattr("udc_edge.engines.tensorrt_build._probe", lambda index: ("standin", 1, "Standin GPU", "8.7"))


def inject(monkeypatch, version: str, **kw) -> types.ModuleType:
    fake = make_standin_trt(version, **kw)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


# -- tiny real ONNX models ----------------------------------------------------------------------
class _Conv(torch.nn.Module):
    def __init__(self, two_inputs: bool = False):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.two = two_inputs

    def forward(self, x, noise=None):
        return self.conv(x + noise if self.two else x)


def export_conv(path, two_inputs: bool = False):
    torch.manual_seed(0)
    names = ["input", "noise"] if two_inputs else ["input"]
    x = torch.rand(1, 3, 32, 32)
    axes = {n: {0: "n", 2: "h", 3: "w"} for n in [*names, "output"]}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(_Conv(two_inputs).eval(), (x, x) if two_inputs else (x,), str(path), input_names=names,
                          output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def make_qdq(path, zero_point_type=TensorProto.INT8, int32_bias: bool = False):
    """A hand-made explicit Q/DQ conv model (symmetric int8 unless told otherwise)."""
    w = numpy_helper.from_array(np.random.default_rng(0).integers(-20, 20, (3, 3, 3, 3)).astype(np.int8), "w_q")
    inits = [w, numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             helper.make_tensor("zp", zero_point_type, [], [0]),
             numpy_helper.from_array(np.full(3, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(3, np.int8), "wzp")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["xq"], name="q_in"),
             helper.make_node("DequantizeLinear", ["xq", "s", "zp"], ["xd"], name="dq_in"),
             helper.make_node("DequantizeLinear", ["w_q", "ws", "wzp"], ["wd"], name="dq_w", axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["output"], name="conv", pads=[1, 1, 1, 1])]
    if int32_bias:  # what ONNX Runtime's quantiser writes unless QuantizeBias=False
        inits += [numpy_helper.from_array(np.array([5, -3, 7], np.int32), "b_q"),
                  numpy_helper.from_array(np.full(3, 2e-4, np.float32), "bs")]
        nodes.insert(3, helper.make_node("DequantizeLinear", ["b_q", "bs"], ["bd"], name="conv.bias_DequantizeLinear",
                                         axis=0))
        nodes[-1].input.append("bd")
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 3, "h", "w"]) for n in ("input", "output")]
    model = helper.make_model(helper.make_graph(nodes, "qdq", io[:1], io[1:], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(path))
    return path


# -- plan_build ---------------------------------------------------------------------------------
@pytest.mark.parametrize("version", [(8, 6), (10, 3), (11, 0)])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_standin_plan_build_flags_per_version_not_tensorrt(version, precision):
    """STAND-IN (no TensorRT): plan_build's documented flags for each version x precision."""
    plan = trt_backend.plan_build(version, precision)
    assert "calibrator" not in str(plan.flags).lower()
    assert plan.cleared_flags == ("TF32",)
    assert plan.needs_qdq == (precision == "int8")
    if version[0] >= 11:
        assert plan.strongly_typed and plan.network_flags == ("STRONGLY_TYPED",)
        assert plan.flags == ()  # FP16/INT8 builder flags were removed in TensorRT 11
        assert plan.convert_fp16_onnx == (precision == "fp16")
    else:
        assert not plan.strongly_typed and not plan.convert_fp16_onnx
        assert plan.network_flags == (("EXPLICIT_BATCH",) if version[0] == 8 else ())
        assert plan.flags == {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]


def test_standin_plan_build_refuses_old_versions_and_bad_precision_not_tensorrt():
    """STAND-IN (no TensorRT): < 8.5 is refused; an unknown precision is a usage error."""
    with pytest.raises(BackendUnavailableError, match="8.5"):
        trt_backend.plan_build((8, 4, 3), "fp32")
    with pytest.raises(UsageError, match="precision"):
        trt_backend.plan_build((10, 3), "bf16")


@pytest.mark.parametrize("text,expected", [("8.6.1.post1", (8, 6, 1)), ("10.0.0b6", (10, 0, 0)),
                                           ("10.3.0", (10, 3, 0)), ("11.0.0.12", (11, 0, 0, 12))])
def test_standin_parse_version_not_tensorrt(text, expected):
    """STAND-IN (no TensorRT): version strings as TensorRT wheels spell them."""
    assert trt_backend.parse_version(text) == expected


# -- availability -------------------------------------------------------------------------------
def test_standin_require_tensorrt_hidden_module_gives_install_hint_not_tensorrt(monkeypatch):
    """STAND-IN (tensorrt hidden from sys.modules): clear error naming the extra and --backend ort."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError) as err:
        trt_backend.require_tensorrt()
    assert 'pip install "udc-edge[trt]"' in str(err.value) and "--backend ort" in str(err.value)
    assert trt_backend.is_available() is False


def test_standin_is_available_needs_a_gpu_too_not_tensorrt(monkeypatch):
    """STAND-IN module importable but no CUDA device: not available; with a (faked) device: available."""
    inject(monkeypatch, "10.3.0")
    build_mod = sys.modules["udc_edge.engines.tensorrt_build"]
    monkeypatch.setattr(build_mod, "_probe", lambda index: (None, 0, None, None))
    assert trt_backend.is_available() is False
    monkeypatch.setattr(build_mod, "_probe", lambda index: ("standin", 1, "Standin GPU", "8.7"))
    assert trt_backend.is_available() is True
    assert trt_backend.version_tuple() == (10, 3, 0)


# -- build_serialized against the stand-in builder ----------------------------------------------
@pytest.mark.parametrize("version,net_bits,flags", [("8.6.1", 1 << 0, ["FP16"]), ("10.3.0", 0, ["FP16"]),
                                                    ("11.0.0", 1 << 0, [])])
def test_standin_build_fp16_sets_profile_and_flags_per_version_not_tensorrt(
        tmp_path, monkeypatch, standin_gpu, version, net_bits, flags):
    """STAND-IN builder (NOT TensorRT): profile shapes, network/builder flags, no calibrator."""
    fake = inject(monkeypatch, version)
    onnx_path = export_conv(tmp_path / "m.onnx")
    data, info = trt_backend.build_serialized(onnx_path, "fp16", PROFILE, workspace_mb=64)
    rec = fake.record
    assert data == b"standin-engine"
    assert rec["profiles"] == [("input", PROFILE["min"], PROFILE["opt"], PROFILE["max"])]
    assert rec["network_flags"] == net_bits
    assert rec["set_flags"] == flags and rec["cleared_flags"] == ["TF32"]
    assert rec["pool"] == ("WORKSPACE", 64 << 20)
    assert "int8_calibrator" not in rec["config_attrs"]
    assert info["tensorrt_version"] == version
    assert info["device"]["name"] == "Standin GPU" and info["device"]["compute_capability"] == "8.7"
    assert info["strongly_typed"] == (version.startswith("11"))


def test_standin_fp16_on_11_converts_onnx_to_fp16_with_fp32_io_not_tensorrt(tmp_path, monkeypatch, standin_gpu):
    """STAND-IN TensorRT 11 (NOT TensorRT): the parsed ONNX has fp16 weights and fp32 inputs/outputs."""
    fake = inject(monkeypatch, "11.0.0")
    trt_backend.build_serialized(export_conv(tmp_path / "m.onnx"), "fp16", PROFILE)
    parsed = fake.record["parsed"]
    assert parsed.graph.initializer and all(t.data_type == TensorProto.FLOAT16 for t in parsed.graph.initializer)
    for vi in [*parsed.graph.input, *parsed.graph.output]:
        assert vi.type.tensor_type.elem_type == TensorProto.FLOAT
    assert fake.record["set_flags"] == []


def test_standin_fp16_on_10_parses_original_fp32_onnx_not_tensorrt(tmp_path, monkeypatch, standin_gpu):
    """STAND-IN TensorRT 10.3 (NOT TensorRT): FP16 comes from the flag; the ONNX is left as it is."""
    fake = inject(monkeypatch, "10.3.0")
    trt_backend.build_serialized(export_conv(tmp_path / "m.onnx"), "fp16", PROFILE)
    assert all(t.data_type == TensorProto.FLOAT for t in fake.record["parsed"].graph.initializer)


def test_standin_two_input_purifier_graph_gets_same_profile_not_tensorrt(tmp_path, monkeypatch, standin_gpu):
    """STAND-IN builder (NOT TensorRT): "input" and "noise" both get the given min/opt/max."""
    fake = inject(monkeypatch, "10.3.0")
    _, info = trt_backend.build_serialized(export_conv(tmp_path / "p.onnx", two_inputs=True), "fp32", PROFILE)
    assert [p[0] for p in fake.record["profiles"]] == ["input", "noise"]
    assert all(p[1:] == (PROFILE["min"], PROFILE["opt"], PROFILE["max"]) for p in fake.record["profiles"])
    assert info["inputs"] == ["input", "noise"] and fake.record["set_flags"] == []


@pytest.mark.parametrize("version,flags", [("8.6.1", ["INT8"]), ("10.3.0", ["INT8"]), ("11.0.0", [])])
def test_standin_int8_builds_qdq_model_without_calibrator_not_tensorrt(tmp_path, monkeypatch, standin_gpu,
                                                                       version, flags):
    """STAND-IN builder (NOT TensorRT): INT8 = the Q/DQ ONNX; INT8 flag only before 11; never a calibrator."""
    fake = inject(monkeypatch, version)
    trt_backend.build_serialized(make_qdq(tmp_path / "q.onnx"), "int8", PROFILE)
    assert fake.record["set_flags"] == flags and "FP16" not in fake.record["set_flags"]
    assert "int8_calibrator" not in fake.record["config_attrs"]
    assert any(n.op_type == "QuantizeLinear" for n in fake.record["parsed"].graph.node)


def test_standin_int8_refuses_float_or_cpu_target_models_not_tensorrt(tmp_path, monkeypatch, standin_gpu):
    """STAND-IN builder (NOT TensorRT): refuses int8 of a float ONNX, uint8 or int32-bias Q/DQ, fp16 of Q/DQ."""
    fake = inject(monkeypatch, "10.3.0")
    with pytest.raises(EngineError, match="no QuantizeLinear"):
        trt_backend.build_serialized(export_conv(tmp_path / "m.onnx"), "int8", PROFILE)
    with pytest.raises(EngineError, match="--target tensorrt"):
        trt_backend.build_serialized(make_qdq(tmp_path / "u8.onnx", TensorProto.UINT8), "int8", PROFILE)
    with pytest.raises(EngineError, match="--precision int8"):
        trt_backend.build_serialized(make_qdq(tmp_path / "q.onnx"), "fp16", PROFILE)
    with pytest.raises(EngineError, match=r"conv\.bias_DequantizeLinear \(INT32\).*QuantizeBias=False"):
        trt_backend.build_serialized(make_qdq(tmp_path / "b32.onnx", int32_bias=True), "int8", PROFILE)
    assert fake.record["parsed"] is None  # refused before TensorRT was asked for anything


def test_standin_parser_errors_name_the_node_not_tensorrt(tmp_path, monkeypatch, standin_gpu):
    """STAND-IN parser (NOT TensorRT) that fails: the EngineError names the node and operator."""
    inject(monkeypatch, "10.3.0", parse_ok=False)
    with pytest.raises(EngineError, match=r"/body/fancy.*FancyOp.*Unsupported operator"):
        trt_backend.build_serialized(export_conv(tmp_path / "m.onnx"), "fp32", PROFILE)


def test_standin_failed_build_and_bad_profiles_are_clear_errors_not_tensorrt(tmp_path, monkeypatch, standin_gpu):
    """STAND-IN builder (NOT TensorRT): a None engine, min > max, or C != 3 are refused clearly."""
    fake = inject(monkeypatch, "10.3.0")
    onnx_path = export_conv(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="min <= opt <= max"):
        trt_backend.build_serialized(onnx_path, "fp32", {"min": [1, 3, 64, 64], "opt": [1, 3, 32, 32],
                                                         "max": [1, 3, 64, 64]})
    with pytest.raises(EngineError, match="does not fit"):
        trt_backend.build_serialized(onnx_path, "fp32", {k: [1, 4, 32, 32] for k in ("min", "opt", "max")})
    fake.fail_build = True
    with pytest.raises(EngineError, match="failed to build"):
        trt_backend.build_serialized(onnx_path, "fp32", PROFILE)


# -- TrtEngine's manifest checks -------------------------------------------------------------------
def _engine_with_manifest(tmp_path, version: str, device: dict):
    path = tmp_path / "m.engine"
    path.write_bytes(b"standin-engine")
    write_manifest(path, Manifest(backend="tensorrt", backend_version=version, precision="fp16",
                                  requested_precision="fp16", engine_sha256=sha256_file(path),
                                  shape_profile=PROFILE, device=device))
    return path


def test_standin_trt_engine_refuses_other_tensorrt_version_not_tensorrt(tmp_path, monkeypatch):
    """STAND-IN tensorrt 10.3 (NOT TensorRT) loading an engine built with 8.6: refused, says rebuild."""
    inject(monkeypatch, "10.3.0")
    monkeypatch.setattr(trt_backend, "device_info", lambda i=0: {"name": "Orin", "compute_capability": "8.7"})
    path = _engine_with_manifest(tmp_path, "8.6.1", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(EngineError, match=r"TensorRT 8\.6\.1.*10\.3\.0.*not portable") as err:
        trt_backend.TrtEngine(path)
    assert "rebuild" in str(err.value)


def test_standin_trt_engine_refuses_other_gpu_not_tensorrt(tmp_path, monkeypatch):
    """STAND-IN tensorrt (NOT TensorRT) on a (faked) H100 loading an Orin engine: refused, says rebuild."""
    inject(monkeypatch, "10.3.0")
    monkeypatch.setattr(trt_backend, "device_info", lambda i=0: {"name": "NVIDIA H100", "compute_capability": "9.0"})
    path = _engine_with_manifest(tmp_path, "10.3.0", {"name": "Orin", "compute_capability": "8.7"})
    with pytest.raises(EngineError, match="not portable across GPUs") as err:
        trt_backend.TrtEngine(path)
    assert "rebuild" in str(err.value) and "Orin" in str(err.value) and "H100" in str(err.value)


def test_standin_trt_engine_accepts_matching_manifest_without_touching_cuda_not_tensorrt(tmp_path, monkeypatch):
    """STAND-IN tensorrt (NOT TensorRT): a matching manifest constructs; CUDA is only opened on activate."""
    inject(monkeypatch, "10.3.0")
    dev = {"name": "Orin", "compute_capability": "8.7"}
    monkeypatch.setattr(trt_backend, "device_info", lambda i=0: dev)
    engine = trt_backend.TrtEngine(_engine_with_manifest(tmp_path, "10.3.0", dev))
    assert engine.cuda is None and not engine.active and engine.manifest.precision == "fp16"


def test_standin_trt_engine_without_tensorrt_says_install_not_tensorrt(tmp_path, monkeypatch):
    """STAND-IN (tensorrt hidden): loading a TensorRT engine says how to install the extra."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match=r"udc-edge\[trt\]"):
        trt_backend.TrtEngine(_engine_with_manifest(tmp_path, "10.3.0", {}))


# -- TrtEngine's execution logic against a stand-in runtime and fake device memory -----------------
class StandinCuda:
    """Fake CUDA (NOT CUDA): device memory is a dict of numpy byte arrays; events time 1 ms."""

    name, stream = "standin", 0
    def event(self):
        return object()
    record = sync = lambda self, *a: None
    def elapsed_ms(self, a, b):
        return 1.0
    def host(self, shape, dtype):
        return np.empty(shape, dtype)

    def __init__(self):
        self.mem, self.closed, self.allocs = {}, False, 0

    def malloc(self, nbytes):
        self.allocs += 1
        ptr = 4096 * self.allocs
        self.mem[ptr] = np.zeros(nbytes, np.uint8)
        return ptr, ptr

    def free(self, ptr):
        del self.mem[ptr]

    def h2d(self, ptr, host):
        self.mem[ptr][: host.nbytes] = host.reshape(-1).view(np.uint8)

    def d2h(self, host, ptr):
        host.reshape(-1).view(np.uint8)[:] = self.mem[ptr][: host.nbytes]

    def close(self):
        self.closed = True


def add_standin_runtime(trt, cuda: StandinCuda) -> None:
    """A stand-in Runtime whose one "layer" doubles the input (NOT TensorRT)."""
    trt.TensorIOMode = enum.IntEnum("TensorIOMode", {"INPUT": 1, "OUTPUT": 2})
    trt.nptype = lambda dt: np.float32
    trt.IProfiler = type("IProfiler", (), {"__init__": lambda self: None})

    class Context:
        profiler = None
        def set_input_shape(self, name, shape):
            return self.shapes.__setitem__(name, shape) or shape[2] <= 64
        def get_tensor_shape(self, name):
            return self.shapes["input"]
        def set_tensor_address(self, name, ptr):
            return self.addr.__setitem__(name, ptr)

        def __init__(self):
            self.shapes, self.addr = {}, {}

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shapes["input"])) * 4
            x = cuda.mem[self.addr["input"]][:n].view(np.float32)
            cuda.mem[self.addr["output"]][:n] = (2 * x).view(np.uint8)
            if self.profiler is not None:
                self.profiler.report_layer_time("conv", 0.5)
            return True

    class Engine:
        num_io_tensors, num_layers = 2, 1
        get_tensor_name = staticmethod(lambda i: ["input", "output"][i])
        get_tensor_mode = staticmethod(lambda n: trt.TensorIOMode.INPUT if n == "input" else trt.TensorIOMode.OUTPUT)
        get_tensor_dtype = staticmethod(lambda n: "float32")
        get_tensor_shape = staticmethod(lambda n: (-1, 3, -1, -1))
        create_execution_context = staticmethod(Context)

    trt.Runtime = type("Runtime", (), {"__init__": lambda self, logger: None, "deserialize_cuda_engine":
                                       lambda self, data: Engine() if data == b"standin-engine" else None})


def test_standin_trt_engine_execution_logic_not_tensorrt(tmp_path, monkeypatch):
    """STAND-IN runtime and fake device memory (NOT TensorRT/CUDA): shapes, copies, times, profiler."""
    fake, cuda = inject(monkeypatch, "10.3.0"), StandinCuda()
    add_standin_runtime(fake, cuda)
    dev = {"name": "Orin", "compute_capability": "8.7"}
    monkeypatch.setattr(trt_backend, "device_info", lambda i=0: dev)
    monkeypatch.setattr(trt_backend, "open_cuda", lambda i=0: cuda)
    rng = np.random.default_rng(0)
    with trt_backend.TrtEngine(_engine_with_manifest(tmp_path, "10.3.0", dev)) as eng:
        x1 = rng.random((1, 3, 20, 24), dtype=np.float32)
        y1 = eng(x1)
        np.testing.assert_array_equal(eng(x1 / 2), x1)  # same shape: staging arrays are reused
        x2 = rng.random((2, 3, 64, 64), dtype=np.float32)  # larger: device buffers must grow
        y2, times = eng.timed_call(x2)
        np.testing.assert_array_equal(y1, 2 * x1)  # not overwritten by later calls
        np.testing.assert_array_equal(y2, 2 * x2)
        assert times == {"h2d_ms": 1.0, "compute_ms": 1.0, "d2h_ms": 1.0}
        assert eng.profile_layers(x1, runs=4) == [("conv", "", 0.5)]
        assert eng._context.profiler is None  # ordinary calls stay unprofiled
        assert [i.name for i in eng.info().inputs] == ["input"] and eng.info().inputs[0].shape == (None, 3, None, None)
    assert cuda.closed and cuda.mem == {}


# -- build_engine(backend="trt"): the path `udc-edge build --backend trt` takes ----------------
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_standin_build_engine_trt_writes_engine_and_manifest_not_tensorrt(tmp_path, monkeypatch, standin_gpu,
                                                                          precision):
    """STAND-IN builder (NOT TensorRT) behind build_engine: the plan bytes land in --out and the
    manifest records the backend, version, precision, profile, source hash and device. INT8
    here is a prequantised (bundle) Q/DQ model: no calibration is run."""
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.manifest import read_manifest
    from udc_edge.engines.spec import BuildSpec, ShapeProfile

    inject(monkeypatch, "10.3.0")
    src = make_qdq(tmp_path / "q.onnx") if precision == "int8" else export_conv(tmp_path / "m.onnx")
    profile = ShapeProfile(tuple(PROFILE["min"]), tuple(PROFILE["opt"]), tuple(PROFILE["max"]))
    out = tmp_path / f"m_{precision}.engine"
    report = build_engine(src, out, BuildSpec(backend="trt", precision=precision, profile=profile,
                                              prequantised=precision == "int8"))
    assert out.read_bytes() == b"standin-engine"
    m = read_manifest(out)
    assert (m.backend, m.backend_version, m.precision) == ("tensorrt", "10.3.0", precision)
    assert m.engine_sha256 == sha256_file(out) and m.source_onnx_sha256 == sha256_file(src)
    assert m.shape_profile == PROFILE and m.device["name"] == "Standin GPU"
    assert report.backend == "tensorrt" and report.precision == precision
