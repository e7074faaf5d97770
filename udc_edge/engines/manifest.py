"""The sidecar manifest ``ENGINE.json`` written beside every engine file.

It records where the engine came from (source ONNX sha256, the engine file's own sha256),
how it was built (backend and version, requested and built precision, shape profile,
calibration hash, layers kept in float and why, session options, build time) and where
(device, compute capability). Loading checks it first and refuses a mismatch with a clear
message: an altered file, another TensorRT version, another GPU. The manifest's own fields
are covered by ``manifest_sha256`` (a hash of the rest of it), so a hand-edited precision,
backend, profile or multiple is refused too; every field is type-checked in one place
(:func:`_validate`), so an edited manifest is one :class:`ManifestError`, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from udc_edge.core.errors import EngineError, ManifestError
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
    manifest_sha256: str = ""  # sha256 of every other field (canonical JSON): an edit is refused

    def to_dict(self) -> dict:
        return asdict(self)

    def own_sha256(self) -> str:
        """The hash of the manifest's fields other than ``manifest_sha256`` itself."""
        return fields_sha256({k: v for k, v in self.to_dict().items() if k != "manifest_sha256"})


def fields_sha256(doc: dict) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_STR = ("backend", "backend_version", "precision", "requested_precision", "engine_sha256", "source_onnx",
        "source_onnx_sha256", "format", "manifest_sha256")
_DICT = ("session_options", "device", "build_options", "summary")


def _validate(raw: Any, path: Path) -> dict:
    """Type-check a manifest document field by field; one ManifestError naming the field."""
    def bad(what: str) -> ManifestError:
        return ManifestError(f"manifest {path} is malformed: {what}",
                             "it was edited or damaged; rebuild the engine with udc-edge build")

    if not isinstance(raw, dict):
        raise bad(f"it holds a JSON {type(raw).__name__}, not an object")
    for k in _STR:
        if k in raw and not isinstance(raw[k], str):
            raise bad(f"{k!r} must be a string, got {raw[k]!r}")
    for k in _DICT:
        if k in raw and not isinstance(raw[k], dict):
            raise bad(f"{k!r} must be an object, got {raw[k]!r}")
    missing = [k for k in ("backend", "backend_version", "precision", "requested_precision", "engine_sha256")
               if k not in raw]
    if missing:
        raise bad(f"missing {', '.join(missing)}")
    if "multiple" in raw and not (_is_int(raw["multiple"]) and raw["multiple"] >= 1):
        raise bad(f"'multiple' must be an integer >= 1, got {raw['multiple']!r}")
    for k in ("inputs", "outputs"):
        if k in raw and not (isinstance(raw[k], list) and raw[k] and all(isinstance(n, str) for n in raw[k])):
            raise bad(f"{k!r} must be a non-empty list of names, got {raw[k]!r}")
    prof = raw.get("shape_profile")
    if prof is not None:
        ok = isinstance(prof, dict) and set(prof) == {"min", "opt", "max"} and all(
            isinstance(s, list) and len(s) == 4 and all(_is_int(d) and d >= 1 for d in s) for s in prof.values())
        if not ok:
            raise bad(f"'shape_profile' must be {{min, opt, max}} of 4 positive integers each, got {prof!r}")
    if raw.get("calibration") is not None and not isinstance(raw["calibration"], dict):
        raise bad(f"'calibration' must be an object or null, got {raw['calibration']!r}")
    if "excluded_layers" in raw and not isinstance(raw["excluded_layers"], list):
        raise bad(f"'excluded_layers' must be a list, got {raw['excluded_layers']!r}")
    if "build_seconds" in raw and not isinstance(raw["build_seconds"], numbers.Real):
        raise bad(f"'build_seconds' must be a number, got {raw['build_seconds']!r}")
    return raw


def manifest_path(engine_path: str | os.PathLike) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def write_manifest(engine_path: str | os.PathLike, manifest: Manifest) -> Path:
    """Write ``ENGINE.json`` with ``manifest_sha256`` set over its other fields."""
    path = manifest_path(engine_path)
    manifest.manifest_sha256 = manifest.own_sha256()
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
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path} is corrupt: {exc}", "rebuild the engine") from exc
    raw = _validate(raw, path)
    known = {f.name for f in fields(Manifest)}
    m = Manifest(**{k: v for k, v in raw.items() if k in known})
    if m.format != MANIFEST_FORMAT:
        raise ManifestError(f"manifest {path} has format {m.format!r}, expected {MANIFEST_FORMAT!r}")
    if m.manifest_sha256 != m.own_sha256():
        raise ManifestError(
            f"manifest {path} was edited after the build (its fields do not match its manifest_sha256"
            f"{'' if m.manifest_sha256 else ': none recorded, an older or hand-written manifest'})",
            "never edit a manifest by hand: rebuild the engine with udc-edge build",
        )
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
