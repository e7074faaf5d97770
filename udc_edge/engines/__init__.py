"""One Engine interface; backends: torch (reference), onnxruntime (CPU default), openvino, tensorrt.

``load_engine(path)`` reads the engine's manifest first, checks it, and returns the right
backend's Engine. Each backend module says ``is_available()`` / ``get_version()`` (as
mmdeploy's backend managers do); the same probe makes TensorRT tests skip themselves.
"""

from __future__ import annotations

import os
from pathlib import Path

from udc_edge.core.backends import Backend
from udc_edge.core.errors import EngineError
from udc_edge.engines.base import Engine, EngineInfo, IOSpec
from udc_edge.engines.manifest import Manifest, read_manifest

ENGINE_SUFFIXES = (".onnx", ".xml", ".engine", ".plan", ".trt")

__all__ = ["ENGINE_SUFFIXES", "Engine", "EngineInfo", "IOSpec", "Manifest", "is_engine_path", "load_engine"]


def is_engine_path(path: str | os.PathLike) -> bool:
    """Whether a MODEL argument names an engine file rather than a torch model."""
    return Path(str(path)).suffix.lower() in ENGINE_SUFFIXES


def load_engine(path: str | os.PathLike, threads: int = 0) -> Engine:
    """Load an engine built by ``udc-edge build`` (its manifest decides the backend)."""
    manifest = read_manifest(path)
    backend = Backend.from_manifest(manifest.backend)
    if backend is Backend.ORT:
        from udc_edge.engines.ort import OrtEngine

        return OrtEngine(path, manifest, threads=threads)
    if backend is Backend.OPENVINO:
        from udc_edge.engines.openvino import OpenVinoEngine, require_openvino

        require_openvino()
        return OpenVinoEngine(path, manifest, threads=threads)
    if backend is Backend.TRT:
        from udc_edge.engines.tensorrt import TrtEngine

        return TrtEngine(path, manifest)
    raise EngineError(f"engine {path} has unknown backend {manifest.backend!r} in its manifest", "rebuild it")
