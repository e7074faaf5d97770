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

from udc_edge.core.backends import Backend
from udc_edge.core.errors import EngineError
from udc_edge.engines.base import Engine, EngineInfo, IOSpec, LayerTime
from udc_edge.engines.manifest import Manifest
from udc_edge.export.onnxrt import DEFAULT_PROVIDERS, make_session, profile_nodes


def is_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def get_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


class OrtEngine(Engine):
    """An ONNX file run by an ONNX Runtime InferenceSession."""

    backend = Backend.ORT.manifest_name

    def __init__(self, path: str | os.PathLike, manifest: Manifest | None = None, threads: int = 0,
                 providers: tuple[str, ...] = DEFAULT_PROVIDERS, multiple: int | None = None):
        super().__init__(manifest, multiple)
        self.path = Path(path)
        self.threads = threads
        self.providers = providers
        self.session: Any = None  # an onnxruntime.InferenceSession while active (onnxruntime has no stubs)

    def _activate(self) -> None:
        opts = self.manifest.session_options if self.manifest else {}
        self.session = make_session(self.path, self.threads, opts, self.providers)
        self._in = [i.name for i in self.session.get_inputs()]
        self._out = self.session.get_outputs()[0].name
        self._outs = [o.name for o in self.session.get_outputs()]

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
        return EngineInfo(Backend.ORT.manifest_name, get_version(), prec, req,
                          [spec(t) for t in sess.get_inputs()], [spec(t) for t in sess.get_outputs()],
                          {"providers": sess.get_providers()})

    def _run(self, outputs: list[str] | None, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """session.run, with a fixed-shape mismatch or ORT's own failure as one EngineError."""
        for t, x in zip(self.session.get_inputs(), inputs, strict=True):
            want = tuple(d if isinstance(d, int) else None for d in t.shape)
            if len(want) == x.ndim and any(d is not None and d != s for d, s in zip(want, x.shape, strict=True)):
                shown = "x".join("?" if d is None else str(d) for d in want)
                raise EngineError(
                    f"engine {self.path.name} takes {t.name!r} of shape {shown} (fixed when it was exported), "
                    f"got {'x'.join(map(str, x.shape))}",
                    "give inputs of that size (e.g. --shape / crop the images), or re-export without --fixed-shape",
                )
        try:
            return self.session.run(outputs, dict(zip(self._in, inputs, strict=True)))
        except Exception as exc:  # ORT's own error types (Fail, RuntimeException, ...): one line, not a traceback
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"engine {self.path.name} failed on an input of shape "
                              f"{'x'.join(map(str, inputs[0].shape))}: {first}",
                              "a smaller input (--shape, --tile) if memory ran out; else rebuild the engine") from exc

    def _infer(self, *inputs: np.ndarray) -> np.ndarray:
        return self._run([self._out], list(inputs))[0]

    def _infer_all(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self._outs, self._run(None, inputs), strict=True))

    def profile_layers(self, *inputs: np.ndarray, runs: int = 10) -> list[LayerTime]:
        """Per-node mean time (ms) from ONNX Runtime's profiler, slowest first."""
        return [LayerTime(*r) for r in profile_nodes(self.path, list(inputs), self.threads,
                             self.manifest.session_options if self.manifest else {}, runs, tuple(self.providers))]
