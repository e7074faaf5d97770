"""TensorRT probes and engine building: availability, the version-dependent build plan, and
``build_serialized`` (ONNX -> serialized engine bytes plus a JSON-able info dict).

``tensorrt``, ``pycuda`` and ``cuda-python`` are imported lazily inside functions, so this
module imports on machines without them. All version branching is in :func:`plan_build`:

=========  ==========================  ===============================  ===================
version    fp32                        fp16                             int8 (Q/DQ ONNX)
=========  ==========================  ===============================  ===================
8.5-9.x    EXPLICIT_BATCH              EXPLICIT_BATCH + FP16 flag       EXPLICIT_BATCH + INT8
10.x       (no network flag)           FP16 flag                        INT8 flag
>= 11      STRONGLY_TYPED              FP16-typed ONNX, STRONGLY_TYPED  STRONGLY_TYPED
=========  ==========================  ===============================  ===================

TF32 is cleared everywhere, so "fp32" layers are genuine FP32 (as on ONNX Runtime). No INT8
calibrator is ever set: INT8 is explicit quantisation only (the Q/DQ ONNX from calibration).
INT8 on < 11 does not add the FP16 flag: layers the Q/DQ model keeps in float stay FP32, which
is what the >= 11 strongly typed build of the same ONNX does, so numerics agree across versions.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from udc_edge.core.errors import BackendUnavailableError, EngineError, UsageError
from udc_edge.core.fileio import work_dir

INSTALL_HINT = (
    'install the extra with pip install "udc-edge[trt]" on a machine with an NVIDIA GPU, or use --backend ort'
)
PRECISIONS = ("fp32", "fp16", "int8")
MIN_VERSION = (8, 5)  # the named-tensor API (set_input_shape / execute_async_v3) arrived in 8.5


# -- availability ---------------------------------------------------------------------------
def require_tensorrt():
    """Import and return ``tensorrt``, or raise BackendUnavailableError with the install hint."""
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or OSError when its shared libraries are missing
        raise BackendUnavailableError(f"TensorRT is not importable here ({type(exc).__name__}: {exc})",
                                      INSTALL_HINT) from exc
    return tensorrt


def get_version() -> str:
    return str(require_tensorrt().__version__)


def parse_version(text: str) -> tuple[int, ...]:
    """Leading integers of a version string: '8.6.1.post1' -> (8, 6, 1), '10.0.0b6' -> (10, 0, 0)."""
    parts = []
    for piece in str(text).split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.group() != piece:
            break
    return tuple(parts)


def version_tuple() -> tuple[int, ...]:
    return parse_version(get_version())


def is_available() -> bool:
    """True when ``tensorrt`` imports AND a CUDA device is usable (the GPU tests' skip probe)."""
    try:
        require_tensorrt()
    except BackendUnavailableError:
        return False
    return _device_count() > 0


# -- CUDA device probes: pycuda, else cuda-python, else the driver library via ctypes --------
def _pycuda_probe(index: int) -> tuple[int, str | None, str | None]:
    import pycuda.driver as cuda

    cuda.init()
    n = int(cuda.Device.count())
    if index >= n:
        return n, None, None
    dev = cuda.Device(index)
    major, minor = dev.compute_capability()
    return n, str(dev.name()), f"{major}.{minor}"


def _cudart_probe(index: int) -> tuple[int, str | None, str | None]:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    err, n = cudart.cudaGetDeviceCount()
    if int(err) != 0 or index >= int(n):
        return int(n) if int(err) == 0 else 0, None, None
    err, prop = cudart.cudaGetDeviceProperties(index)
    name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
    return int(n), name.rstrip("\0"), f"{prop.major}.{prop.minor}"


def _libcuda_probe(index: int) -> tuple[int, str | None, str | None]:
    lib = ctypes.CDLL("nvcuda.dll" if sys.platform.startswith("win") else "libcuda.so.1")
    n, dev = ctypes.c_int(0), ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(n)) != 0:
        return 0, None, None
    if index >= n.value or lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return n.value, None, None
    buf, major, minor = ctypes.create_string_buffer(256), ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetName(buf, 256, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # ..._MINOR
    return n.value, buf.value.decode(), f"{major.value}.{minor.value}"


_PROBES = (("pycuda", _pycuda_probe), ("cuda-python", _cudart_probe), ("libcuda", _libcuda_probe))


def _probe(index: int) -> tuple[str | None, int, str | None, str | None]:
    """(probe used, device count, name, compute capability); never raises (CPU-only machines)."""
    for label, fn in _PROBES:
        with contextlib.suppress(Exception):  # missing module, missing driver, driver errors
            n, name, cc = fn(index)
            return label, n, name, cc
    return None, 0, None, None


def _device_count() -> int:
    return _probe(0)[1]


def device_info(index: int = 0) -> dict[str, Any]:
    """Name and compute capability of CUDA device ``index`` (None where no probe works)."""
    label, _, name, cc = _probe(index)
    return {"kind": "cuda", "index": index, "name": name, "compute_capability": cc, "probe": label}


# -- the build plan: every version branch lives here ---------------------------------------
@dataclass(frozen=True)
class BuildPlan:
    """What to ask TensorRT for. Flag names are attribute names of the trt enums."""

    precision: str
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag members
    flags: tuple[str, ...]  # BuilderFlag members to set
    cleared_flags: tuple[str, ...]  # BuilderFlag members to clear (when the version has them)
    strongly_typed: bool
    convert_fp16_onnx: bool  # convert the ONNX to FP16 weights/compute with FP32 I/O first
    needs_qdq: bool  # the ONNX must already be an explicit Q/DQ model

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "network_flags": list(self.network_flags), "flags": list(self.flags),
                "cleared_flags": list(self.cleared_flags), "strongly_typed": self.strongly_typed,
                "convert_fp16_onnx": self.convert_fp16_onnx}


def plan_build(version: tuple[int, ...], precision: str) -> BuildPlan:
    """The build recipe for TensorRT ``version`` and ``precision`` (fp32 | fp16 | int8)."""
    precision = str(getattr(precision, "value", precision))
    if precision not in PRECISIONS:
        raise UsageError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if tuple(version[:2]) < MIN_VERSION:
        raise BackendUnavailableError(
            f"TensorRT {'.'.join(map(str, version))} is too old: udc-edge needs >= 8.5 "
            "(named I/O tensors, execute_async_v3)", INSTALL_HINT)
    major = version[0]
    qdq = precision == "int8"
    if major >= 11:  # weak typing is gone: precision lives in the ONNX itself
        return BuildPlan(precision, ("STRONGLY_TYPED",), (), ("TF32",), True, precision == "fp16", qdq)
    net = ("EXPLICIT_BATCH",) if major < 10 else ()
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",)}[precision]
    return BuildPlan(precision, net, flags, ("TF32",), False, False, qdq)


# -- ONNX checks and conversion ------------------------------------------------------------
def _qdq_problems(model) -> tuple[bool, list[str], list[str]]:
    """(has Q/DQ nodes, nodes with uint8/non-zero zero points, DQ nodes on non-int8 initializers).

    TensorRT's ONNX parser dequantises only INT8 (and FP8) with zero point 0; ONNX Runtime's
    quantiser by default also writes INT32 biases behind a DequantizeLinear, which it rejects.
    """
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    has, bad_zp, bad_in = False, [], []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        has = True
        label = node.name or node.output[0]
        if len(node.input) > 2 and node.input[2] in inits:
            zp = inits[node.input[2]]
            if zp.data_type == TensorProto.UINT8 or numpy_helper.to_array(zp).any():
                bad_zp.append(label)
        src = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and src is not None and src.data_type != TensorProto.INT8:
            bad_in.append(f"{label} ({TensorProto.DataType.Name(src.data_type)})")
    return has, bad_zp, bad_in


def check_onnx_for_plan(onnx_path: Path, plan: BuildPlan) -> None:
    """Refuse an ONNX that does not fit the plan (no silent precision changes)."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise EngineError(f"{onnx_path} is not a readable ONNX model: {exc}", "re-export it") from exc
    has, bad_zp, bad_in = _qdq_problems(model)
    if plan.needs_qdq and not has:
        raise EngineError(f"{onnx_path} has no QuantizeLinear/DequantizeLinear nodes, and TensorRT INT8 here is "
                          "explicit quantisation only (no calibrator)",
                          "pass --calib DIR so udc-edge makes the Q/DQ model with --target tensorrt")
    if has and not plan.needs_qdq:
        raise EngineError(f"{onnx_path} is a Q/DQ (quantised) model but precision {plan.precision} was asked for",
                          "build it with --precision int8, or pass the float ONNX")
    if bad_zp:
        raise EngineError(f"{onnx_path} has Q/DQ nodes with uint8 or non-zero zero points ({', '.join(bad_zp[:3])}); "
                          "TensorRT needs symmetric int8", "recalibrate with --target tensorrt")
    if bad_in:
        raise EngineError(f"{onnx_path} dequantises non-int8 initializers ({', '.join(bad_in[:3])}), e.g. int32 "
                          "biases; TensorRT's parser dequantises only int8",
                          "quantise for TensorRT with biases left in float (ONNX Runtime extra option "
                          "QuantizeBias=False)")


def convert_fp16(onnx_path: Path, out_path: Path) -> Path:
    """Write an FP16-typed copy of the ONNX with FP32 inputs/outputs (for strongly typed FP16)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(onnx_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


# -- building ------------------------------------------------------------------------------
_LOGGERS: dict[int, Any] = {}


def trt_logger(trt):
    """One trt.Logger per process (per trt module), as TensorRT prefers."""
    if id(trt) not in _LOGGERS:
        _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[id(trt)]


def check_profile(profile: dict[str, Any]) -> dict[str, list[int]]:
    """Validate {"min","opt","max"} NCHW shapes: 4 positive ints each, min <= opt <= max."""
    try:
        p = {k: [int(d) for d in profile[k]] for k in ("min", "opt", "max")}
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"shape profile must be {{'min','opt','max'}} NCHW lists, got {profile!r}") from exc
    if any(len(v) != 4 or min(v) < 1 for v in p.values()):
        raise UsageError(f"shape profile dims must be 4 positive ints (NCHW), got {p}")
    if not all(a <= b <= c for a, b, c in zip(p["min"], p["opt"], p["max"], strict=True)):
        raise UsageError(f"shape profile must satisfy min <= opt <= max per dim, got {p}")
    return p


def _parser_errors(parser) -> str:
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = []
        for attr in ("node_name", "node_operator"):  # 8.6+/10.x; absent on older parsers
            fn = getattr(err, attr, None)
            value = fn() if callable(fn) else None
            if value:
                where.append(str(value))
        node = err.node() if callable(getattr(err, "node", None)) else -1
        label = f"node {node} ({', '.join(where)})" if where else f"node {node}"
        lines.append(f"{label}: {err.desc()}")
    return "; ".join(lines) or "no parser error recorded"


def _flag(enum, name: str, version: tuple[int, ...], required: bool):
    member = getattr(enum, name, None)
    if member is None and required:
        raise EngineError(f"TensorRT {'.'.join(map(str, version))} has no {enum.__name__}.{name}",
                          "this TensorRT version is outside what udc-edge supports (8.5-11.x)")
    return member


def build_serialized(onnx_path: str | os.PathLike, precision: str, profile: dict[str, Any],
                     workspace_mb: int = 2048, log: Callable[[str], None] | None = None) -> tuple[bytes, dict]:
    """Build a TensorRT engine from ``onnx_path``; returns (serialized engine, JSON-able info).

    Every network input gets the same min/opt/max profile (the purifier has "input" and
    "noise"). Put ``info["device"]`` in the manifest's ``device`` and ``get_version()`` in its
    ``backend_version``: ``TrtEngine`` refuses engines whose manifest disagrees with the machine.
    """
    trt = require_tensorrt()
    say = log or (lambda msg: None)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file {onnx_path} does not exist", "export it with udc-edge export")
    version = parse_version(trt.__version__)
    plan = plan_build(version, precision)
    prof = check_profile(profile)
    check_onnx_for_plan(onnx_path, plan)
    t0 = time.perf_counter()
    with work_dir("trt") as tmp:
        src = onnx_path
        if plan.convert_fp16_onnx:
            say("converting the ONNX to FP16 with FP32 I/O for a strongly typed build")
            src = convert_fp16(onnx_path, Path(tmp) / "fp16.onnx")
        logger = trt_logger(trt)
        builder = trt.Builder(logger)
        bits, used_net = 0, []
        for name in plan.network_flags:
            member = _flag(trt.NetworkDefinitionCreationFlag, name, version, required=version[0] < 11)
            if member is not None:  # on >= 11 STRONGLY_TYPED is implied; the flag may be gone
                bits |= 1 << int(member)
                used_net.append(name)
        network = builder.create_network(bits)
        parser = trt.OnnxParser(network, logger)
        say(f"parsing {onnx_path.name}")
        if not parser.parse_from_file(str(src)):
            raise EngineError(f"TensorRT's ONNX parser rejected {onnx_path}: {_parser_errors(parser)}",
                              "check the opset and operators (udc-edge export), or update TensorRT")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        for name in plan.flags:
            config.set_flag(_flag(trt.BuilderFlag, name, version, required=True))
        cleared = [n for n in plan.cleared_flags if getattr(trt.BuilderFlag, n, None) is not None]
        for name in cleared:
            config.clear_flag(getattr(trt.BuilderFlag, name))
        if hasattr(trt, "ProfilingVerbosity"):
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names for profile_layers
        opt_profile = builder.create_optimization_profile()
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        for tensor in inputs:
            static = tuple(tensor.shape)
            if len(static) != 4 or any(s >= 0 and s != p for s, p in zip(static, prof["opt"], strict=True)):
                raise EngineError(f"network input {tensor.name!r} has shape {static}, which the profile "
                                  f"{prof} does not fit", "give shapes with the model's static dims (NCHW, C=3)")
            opt_profile.set_shape(tensor.name, prof["min"], prof["opt"], prof["max"])
        config.add_optimization_profile(opt_profile)
        say(f"building TensorRT {trt.__version__} {plan.precision} engine (flags {list(plan.flags) or 'none'}, "
            f"strongly typed {plan.strongly_typed})")
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} ({plan.precision}); see the "
                          "TensorRT log above", "try a larger workspace_mb, a smaller max shape, or fp32")
    data = bytes(serialized)
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    info = {"tensorrt_version": str(trt.__version__), **plan.to_dict(), "network_flags": used_net,
            "cleared_flags": cleared, "workspace_mb": int(workspace_mb), "profile": prof,
            "inputs": [t.name for t in inputs], "outputs": outputs, "device": device_info(),
            "build_seconds": round(time.perf_counter() - t0, 3), "engine_bytes": len(data)}
    say(f"built {len(data) / 2**20:.1f} MiB in {info['build_seconds']:.1f} s")
    return data, info
