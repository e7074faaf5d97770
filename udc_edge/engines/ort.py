"""ONNX Runtime backend: FP32 and INT8 (Q/DQ) engines on the CPU, and the CUDA/TensorRT
execution providers when a user's onnxruntime build has them.

An ORT "engine" is the (optionally quantised) ONNX file plus its manifest; the session is
created on ``activate()`` with full graph optimisation and the session options recorded
in the manifest (e.g. memory-pattern reuse disabled for graphs whose kernels need it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.engines.base import Engine, EngineInfo, IOSpec
from udc_edge.engines.manifest import Manifest
from udc_edge.errors import EngineError

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


def is_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def get_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def session_options(threads: int = 0, options: dict[str, Any] | None = None):
    """SessionOptions with full graph optimisation plus recorded overrides."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    for key, value in (options or {}).items():
        if not hasattr(so, key):
            raise EngineError(f"unknown ONNX Runtime session option {key!r} in the manifest")
        if key == "graph_optimization_level" and isinstance(value, str):  # JSON-recorded enum name
            value = getattr(ort.GraphOptimizationLevel, value)
        setattr(so, key, value)
    return so


def make_session(path: str | os.PathLike | bytes, threads: int = 0, options: dict[str, Any] | None = None,
                 providers: tuple[str, ...] = DEFAULT_PROVIDERS):
    """An InferenceSession, with a clear error for corrupt or unsupported models."""
    import onnxruntime as ort

    avail = set(ort.get_available_providers())
    chosen = [p for p in providers if p in avail] or ["CPUExecutionProvider"]
    src = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(src, sess_options=session_options(threads, options), providers=chosen)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        name = "in-memory model" if isinstance(path, bytes) else str(path)
        raise EngineError(f"ONNX Runtime cannot load {name}: {str(exc).splitlines()[0][:300]}",
                          "re-export the model (udc-edge export) or check the file is complete") from exc


def profile_nodes(model: str | os.PathLike | bytes, inputs: list[np.ndarray], threads: int = 0,
                  options: dict[str, Any] | None = None, runs: int = 10,
                  providers: tuple[str, ...] = DEFAULT_PROVIDERS) -> list[tuple[str, str, float]]:
    """Per-node mean time (ms) from ONNX Runtime's profiler over ``runs`` runs of ``inputs``
    (in the model's input order): ``[(node, op_type, ms)]``, slowest first."""
    import json
    import tempfile

    import onnxruntime as ort

    src = model if isinstance(model, bytes) else str(model)
    with tempfile.TemporaryDirectory(prefix="udc-edge-prof-") as tmp:
        so = session_options(threads, options)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(src, sess_options=so, providers=list(providers))
        feed = dict(zip([i.name for i in sess.get_inputs()], inputs))
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[tuple[str, str], float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            key = (ev["name"][: -len("_kernel_time")], ev.get("args", {}).get("op_name", ""))
            totals[key] = totals.get(key, 0.0) + ev.get("dur", 0) / 1000.0
    return sorted(((name, op, ms / runs) for (name, op), ms in totals.items()), key=lambda r: -r[2])


class OrtEngine(Engine):
    """An ONNX file run by an ONNX Runtime InferenceSession."""

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike, manifest: Manifest | None = None, threads: int = 0,
                 providers: tuple[str, ...] = DEFAULT_PROVIDERS, multiple: int | None = None):
        super().__init__(manifest, multiple)
        self.path = Path(path)
        self.threads = threads
        self.providers = providers
        self.session = None

    def _activate(self) -> None:
        opts = self.manifest.session_options if self.manifest else {}
        self.session = make_session(self.path, self.threads, opts, self.providers)
        self._in = [i.name for i in self.session.get_inputs()]
        self._out = self.session.get_outputs()[0].name

    def _deactivate(self) -> None:
        self.session = None

    def info(self) -> EngineInfo:
        if self.session is None:
            self.activate()
        sess = self.session
        def spec(t):
            return IOSpec(t.name, tuple(d if isinstance(d, int) else None for d in t.shape), "float32")
        prec = self.manifest.precision if self.manifest else "fp32"
        req = self.manifest.requested_precision if self.manifest else prec
        return EngineInfo("onnxruntime", get_version(), prec, req,
                          [spec(t) for t in sess.get_inputs()], [spec(t) for t in sess.get_outputs()],
                          {"providers": sess.get_providers()})

    def _infer(self, *inputs: np.ndarray) -> np.ndarray:
        for t, x in zip(self.session.get_inputs(), inputs):
            want = tuple(d if isinstance(d, int) else None for d in t.shape)
            if len(want) == x.ndim and any(d is not None and d != s for d, s in zip(want, x.shape)):
                shown = "x".join("?" if d is None else str(d) for d in want)
                raise EngineError(
                    f"engine {self.path.name} takes {t.name!r} of shape {shown} (fixed when it was exported), "
                    f"got {'x'.join(map(str, x.shape))}",
                    "give inputs of that size (e.g. --shape / crop the images), or re-export without --fixed-shape",
                )
        try:
            return self.session.run([self._out], dict(zip(self._in, inputs)))[0]
        except Exception as exc:  # ORT's own error types (Fail, RuntimeException, ...): one line, not a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"engine {self.path.name} failed on an input of shape "
                              f"{'x'.join(map(str, inputs[0].shape))}: {first}",
                              "a smaller input (--shape, --tile) if memory ran out; else rebuild the engine") from exc

    def profile_layers(self, *inputs: np.ndarray, runs: int = 10) -> list[tuple[str, str, float]]:
        """Per-node mean time (ms) from ONNX Runtime's profiler: [(node, op_type, ms)], slowest first."""
        return profile_nodes(self.path, list(inputs), self.threads,
                             self.manifest.session_options if self.manifest else {}, runs, tuple(self.providers))
