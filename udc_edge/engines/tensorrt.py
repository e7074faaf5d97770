"""TensorRT backend: run a serialized engine behind the Engine interface.

Building lives in :mod:`udc_edge.engines.tensorrt_build` (re-exported here). This module is,
with that one, the only place that imports ``tensorrt``/``pycuda``, always lazily.

A ``TrtEngine`` checks its manifest before touching the GPU: the TensorRT version and the
GPU (name, compute capability) must be the ones it was built with, because engines are not
portable. Execution uses named I/O tensors (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) on one CUDA stream; device memory comes from pycuda, or from
Polygraphy's CUDA runtime wrapper when pycuda is missing. Every call records CUDA events
around the host-to-device copies, the compute and the device-to-host copy, so ``bench`` can
report compute time apart from copies (``timed_call``); ``profile_layers`` reports per-layer
times from a TensorRT ``IProfiler``.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.core.backends import Backend
from udc_edge.core.errors import BackendUnavailableError, EngineError
from udc_edge.engines.base import Engine, EngineInfo, IOSpec, LayerTime
from udc_edge.engines.manifest import Manifest, read_manifest
from udc_edge.engines.tensorrt_build import (
    INSTALL_HINT,
    BuildPlan,
    build_serialized,
    device_info,
    get_version,
    is_available,
    parse_version,
    plan_build,
    require_tensorrt,
    trt_logger,
    version_tuple,
)

__all__ = ["BuildPlan", "TrtEngine", "build_serialized", "check_manifest", "device_info", "get_version",
           "is_available", "parse_version", "plan_build", "require_tensorrt", "version_tuple"]

REBUILD_HINT = ("rebuild it on this machine from the ONNX with udc-edge build --backend trt "
                "(on a Jetson, from the bundle's ONNX / Q/DQ ONNX)")


def check_manifest(manifest: Manifest, trt_version: str, device: dict[str, Any], path: str = "engine") -> None:
    """Refuse an engine built by another TensorRT version or for another GPU."""
    if manifest.backend != Backend.TRT.manifest_name:
        raise EngineError(f"{path} is a {manifest.backend} engine, not a TensorRT one", "load it with its backend")
    if manifest.backend_version != trt_version:
        raise EngineError(
            f"{path} was built with TensorRT {manifest.backend_version} but TensorRT {trt_version} is installed; "
            "TensorRT engines are not portable across TensorRT versions", REBUILD_HINT)
    built = manifest.device or {}
    for key in ("compute_capability", "name"):
        want, have = built.get(key), device.get(key)
        if want and have and str(want) != str(have):  # an unprobed side is left to TensorRT's own check
            raise EngineError(
                f"{path} was built for {built.get('name')} (compute capability {built.get('compute_capability')}) "
                f"but this machine has {device.get('name')} (compute capability {device.get('compute_capability')}); "
                "TensorRT engines are not portable across GPUs", REBUILD_HINT)


# -- CUDA plumbing: pycuda, or Polygraphy's ctypes wrapper of the CUDA runtime ---------------
class _PycudaCuda:
    """Stream, buffers and events through pycuda on the device's primary context."""

    name = "pycuda"

    def __init__(self, index: int):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.ctx = cuda.Device(index).retain_primary_context()  # shared with TensorRT's runtime API
        self.ctx.push()
        self._stream = cuda.Stream()
        self.stream = self._stream.handle

    def malloc(self, nbytes: int) -> tuple[int, Any]:
        alloc = self.cuda.mem_alloc(nbytes)
        return int(alloc), alloc

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.cuda.pagelocked_empty(shape, dtype)  # async copies need page-locked memory

    def free(self, keep: Any) -> None:
        keep.free()

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(ptr, host, self._stream)

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(host, ptr, self._stream)

    def event(self) -> Any:
        return self.cuda.Event()

    def record(self, ev: Any) -> None:
        ev.record(self._stream)

    def elapsed_ms(self, a: Any, b: Any) -> float:
        b.synchronize()
        return float(a.time_till(b))

    def sync(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self.sync()
        self._stream = None
        self.cuda.Context.pop()
        self.ctx = None


class _CudartCuda:
    """The same through ``polygraphy.cuda`` (malloc/memcpy/Stream) plus ctypes CUDA events."""

    name = "polygraphy.cuda"

    def __init__(self, index: int):
        from polygraphy import cuda as pcuda

        self.pcuda = pcuda
        self.w = pcuda.wrapper()
        self.lib = self.w.handle
        self._check(self.lib.cudaSetDevice(index), "cudaSetDevice")
        self._stream = pcuda.Stream()
        self.stream = self._stream.ptr
        self._events: list[int] = []

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise EngineError(f"CUDA call {what} failed with error {status}")

    def malloc(self, nbytes: int) -> tuple[int, Any]:
        ptr = self.w.malloc(nbytes)
        return ptr, ptr

    def host(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return np.empty(shape, dtype)  # pageable: the runtime stages the copy

    def free(self, keep: Any) -> None:
        self.w.free(keep)

    def h2d(self, ptr: int, host: np.ndarray) -> None:
        self.w.memcpy(ptr, host.ctypes.data, host.nbytes, self.pcuda.MemcpyKind.HostToDevice, self.stream)

    def d2h(self, host: np.ndarray, ptr: int) -> None:
        self.w.memcpy(host.ctypes.data, ptr, host.nbytes, self.pcuda.MemcpyKind.DeviceToHost, self.stream)

    def event(self) -> int:
        ev = ctypes.c_void_p()
        self._check(self.lib.cudaEventCreate(ctypes.byref(ev)), "cudaEventCreate")
        if ev.value is None:
            raise EngineError("cudaEventCreate returned a null event", "check the CUDA driver and device")
        self._events.append(ev.value)
        return ev.value

    def record(self, ev: int) -> None:
        self._check(self.lib.cudaEventRecord(ctypes.c_void_p(ev), ctypes.c_void_p(self.stream)), "cudaEventRecord")

    def elapsed_ms(self, a: int, b: int) -> float:
        self._check(self.lib.cudaEventSynchronize(ctypes.c_void_p(b)), "cudaEventSynchronize")
        ms = ctypes.c_float()
        self._check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(a), ctypes.c_void_p(b)),
                    "cudaEventElapsedTime")
        return float(ms.value)

    def sync(self) -> None:
        self._stream.synchronize()

    def close(self) -> None:
        self.sync()
        for ev in self._events:
            self.lib.cudaEventDestroy(ctypes.c_void_p(ev))
        self._events = []
        self._stream.free()


def open_cuda(index: int = 0) -> _PycudaCuda | _CudartCuda:
    """pycuda when installed, else Polygraphy's CUDA wrapper; BackendUnavailableError if neither."""
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        try:
            import polygraphy.cuda  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError("neither pycuda nor polygraphy.cuda is importable", INSTALL_HINT) from exc
        return _CudartCuda(index)
    return _PycudaCuda(index)


# -- the engine -----------------------------------------------------------------------------
class TrtEngine(Engine):
    """A serialized TensorRT engine (plus its manifest) on CUDA device ``device``."""

    backend = Backend.TRT.manifest_name

    def __init__(self, path: str | os.PathLike, manifest: Manifest | None = None, device: int = 0,
                 multiple: int | None = None):
        require_tensorrt()
        self.path = Path(path)
        manifest = manifest if manifest is not None else read_manifest(self.path)
        self.device = device
        self.device_info = device_info(device)
        check_manifest(manifest, get_version(), self.device_info, str(self.path))
        super().__init__(manifest, multiple)
        self.manifest: Manifest = manifest  # always present: a TensorRT engine is never loaded without one
        self.cuda: _PycudaCuda | _CudartCuda | None = None
        self.last_times: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def _activate(self) -> None:
        trt = require_tensorrt()
        self.cuda = open_cuda(self.device)
        try:
            self._runtime = trt.Runtime(trt_logger(trt))
            try:
                self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            except Exception as exc:
                raise EngineError(f"TensorRT cannot deserialize {self.path}: {exc}", REBUILD_HINT) from exc
            if self._engine is None:
                raise EngineError(f"TensorRT cannot deserialize {self.path} (see the TensorRT log)", REBUILD_HINT)
            self._context = self._engine.create_execution_context()
            eng = self._engine
            names = [eng.get_tensor_name(i) for i in range(eng.num_io_tensors)]
            self._in = [n for n in names if eng.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
            self._out = [n for n in names if n not in self._in]
            self._dtype = {n: np.dtype(trt.nptype(eng.get_tensor_dtype(n))) for n in names}
            self._buffers: dict[str, tuple[int, int, Any]] = {}  # name -> (ptr, nbytes, keep)
            self._hosts: dict[str, np.ndarray] = {}  # name -> host staging array of the last shape
            self._events = [self.cuda.event() for _ in range(4)]
        except BaseException:
            self._release()
            raise

    def _deactivate(self) -> None:
        self._release()

    @property
    def _live(self) -> _PycudaCuda | _CudartCuda:
        """The CUDA plumbing of the active engine (activating it on first use)."""
        if self.cuda is None:
            self.activate()
        if self.cuda is None:  # activate() opens it or raises; kept for the type checker
            raise EngineError(f"{self.path}: no CUDA context after activation")
        return self.cuda

    def _release(self) -> None:
        cuda = self.cuda
        if cuda is None:
            return
        cuda.sync()
        for _, _, keep in getattr(self, "_buffers", {}).values():
            cuda.free(keep)
        self._buffers, self._hosts, self._events = {}, {}, []
        self._context = self._engine = self._runtime = None  # context before engine before runtime
        cuda.close()
        self.cuda = None

    def info(self) -> EngineInfo:
        if not self.active:
            self.activate()
        eng = self._engine

        def spec(n: str) -> IOSpec:
            return IOSpec(n, tuple(d if d >= 0 else None for d in eng.get_tensor_shape(n)), self._dtype[n].name)

        m = self.manifest
        return EngineInfo(Backend.TRT.manifest_name, get_version(), m.precision, m.requested_precision,
                          [spec(n) for n in self._in], [spec(n) for n in self._out],
                          {"device": self.device_info, "cuda": self._live.name, "num_layers": eng.num_layers})

    # -- inference ---------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size, keep = self._buffers.get(name, (0, 0, None))
        if size < nbytes:  # grow only; the profile's max shape bounds it
            if keep is not None:
                self._live.free(keep)
            ptr, keep = self._live.malloc(nbytes)
            self._buffers[name] = (ptr, nbytes, keep)
        return ptr

    def _host(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        arr = self._hosts.get(name)
        if arr is None or arr.shape != shape:
            arr = self._hosts[name] = self._live.host(shape, self._dtype[name])
        return arr

    def _infer(self, *inputs: np.ndarray) -> np.ndarray:
        ctx, cuda = self._context, self._live
        for name, x in zip(self._in, inputs, strict=True):
            if not ctx.set_input_shape(name, tuple(x.shape)):
                raise EngineError(f"{name}: TensorRT refused shape {x.shape} (outside the engine's profile)",
                                  "rebuild with a wider --min-shape/--max-shape")
            self._host(name, tuple(x.shape))[...] = x  # casts if the engine's input is not float32
            ctx.set_tensor_address(name, self._buffer(name, x.size * self._dtype[name].itemsize))
        for name in self._out:
            host = self._host(name, tuple(ctx.get_tensor_shape(name)))
            ctx.set_tensor_address(name, self._buffer(name, max(host.nbytes, 1)))
        e0, e1, e2, e3 = self._events
        cuda.record(e0)
        for name in self._in:
            cuda.h2d(self._buffers[name][0], self._hosts[name])
        cuda.record(e1)
        if not ctx.execute_async_v3(cuda.stream):
            raise EngineError(f"TensorRT execution of {self.path} failed (see the TensorRT log)")
        cuda.record(e2)
        for name in self._out:
            cuda.d2h(self._hosts[name], self._buffers[name][0])
        cuda.record(e3)
        cuda.sync()
        self.last_times = {"h2d_ms": cuda.elapsed_ms(e0, e1), "compute_ms": cuda.elapsed_ms(e1, e2),
                           "d2h_ms": cuda.elapsed_ms(e2, e3)}
        return np.array(self._hosts[self._out[0]], dtype=np.float32)  # a copy: the staging array is reused

    def timed_call(self, *inputs: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Run once; returns the output and CUDA-event times {"h2d_ms", "compute_ms", "d2h_ms"}."""
        y = self(*inputs)
        return y, dict(self.last_times)

    def profile_layers(self, *inputs: np.ndarray, runs: int = 10) -> list[LayerTime]:
        """Mean time per layer (ms) over ``runs`` calls, in execution order, via an IProfiler.

        A separate execution context carries the profiler, so ordinary calls stay unprofiled.
        """
        trt = require_tensorrt()
        if not self.active:
            self.activate()
        times: dict[str, list[float]] = {}

        profiler_base: Any = trt.IProfiler  # a class from the tensorrt module, chosen at run time

        class _Collect(profiler_base):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                times.setdefault(layer_name, []).append(float(ms))

        main, collector = self._context, _Collect()  # keep the Python profiler alive while in use
        prof_ctx = self._engine.create_execution_context()
        prof_ctx.profiler = collector
        self._context = prof_ctx
        try:
            self(*inputs)  # warm-up, not counted
            times.clear()
            for _ in range(max(1, runs)):
                self(*inputs)
        finally:
            self._context = main
            del prof_ctx
        return [LayerTime(name, "", sum(v) / max(1, runs)) for name, v in times.items()]
