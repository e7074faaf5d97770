"""The sidecar manifest ``ENGINE.json`` written beside every engine file.

It records where the engine came from (source ONNX sha256, the engine file's own sha256),
how it was built (backend and version, requested and built precision, shape profile,
calibration hash, layers kept in float and why, session options, build time) and where
(device, compute capability). Loading checks it first and refuses a mismatch with a clear
message: an altered file, another TensorRT version, another GPU.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from udc_edge.core.errors import EngineError
from udc_edge.core.fileio import sha256_file, write_json_atomic

MANIFEST_FORMAT = "udc-edge-engine/1"


@dataclass
class Manifest:
    backend: str
    backend_version: str
    precision: str
    requested_precision: str
    engine_sha256: str
    source_onnx: str = ""
    source_onnx_sha256: str = ""
    shape_profile: dict[str, list[int]] | None = None  # {"min": [...], "opt": [...], "max": [...]}
    multiple: int = 1
    inputs: list[str] = field(default_factory=lambda: ["input"])
    outputs: list[str] = field(default_factory=lambda: ["output"])
    calibration: dict[str, Any] | None = None  # method, count, hash, cache, target
    excluded_layers: list[dict[str, Any]] = field(default_factory=list)  # {"node", "reason"}
    session_options: dict[str, Any] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    build_seconds: float = 0.0
    build_options: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # measured fidelity/speed at build time
    format: str = MANIFEST_FORMAT

    def to_dict(self) -> dict:
        return asdict(self)


def manifest_path(engine_path: str | os.PathLike) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_manifest(engine_path: str | os.PathLike, manifest: Manifest) -> Path:
    path = manifest_path(engine_path)
    write_json_atomic(path, manifest.to_dict())
    return path


def read_manifest(engine_path: str | os.PathLike) -> Manifest:
    """Read and check an engine's manifest: it must exist, parse, and match the file's hash."""
    engine_path = Path(engine_path)
    if not engine_path.is_file():
        raise EngineError(f"engine {engine_path} does not exist", "build it with udc-edge build")
    path = manifest_path(engine_path)
    if not path.is_file():
        raise EngineError(
            f"engine {engine_path} has no manifest {path.name}",
            "engines are loaded with the manifest udc-edge build writes beside them; rebuild it",
        )
    try:
        raw = json.loads(path.read_text())
        known = {f.name for f in fields(Manifest)}
        m = Manifest(**{k: v for k, v in raw.items() if k in known})
    except (json.JSONDecodeError, TypeError) as exc:
        raise EngineError(f"manifest {path} is corrupt: {exc}", "rebuild the engine") from exc
    if m.format != MANIFEST_FORMAT:
        raise EngineError(f"manifest {path} has format {m.format!r}, expected {MANIFEST_FORMAT!r}")
    actual = sha256_file(engine_path)
    if actual != m.engine_sha256:
        raise EngineError(
            f"engine {engine_path} does not match its manifest (sha256 {actual[:12]}... != "
            f"{m.engine_sha256[:12]}...): the file was altered or truncated",
            "rebuild the engine",
        )
    return m


def host_device() -> dict[str, Any]:
    """What this machine is, for CPU engines."""
    return {"kind": "cpu", "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count()}
