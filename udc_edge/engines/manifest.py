"""The sidecar manifest ``ENGINE.json`` written beside every engine file.

It records where the engine came from (source ONNX sha256, the engine file's own sha256),
how it was built (backend and version, requested and built precision, shape profile,
calibration hash, layers kept in float and why, session options, build time) and where
(device, compute capability). Loading checks it first and refuses a mismatch with a clear
message: an altered file, another TensorRT version, another GPU. The manifest's own fields
are covered by ``manifest_sha256`` (a hash of the rest of it), so a hand-edited precision,
backend, profile or multiple is refused too; every field is type-checked in one place
(:func:`_validate`), so an edited manifest is one :class:`ManifestError`, never a traceback.
Engines of more than one file (OpenVINO IR: ``.xml`` + ``.bin``) list the others in
``files_sha256``; each must exist and match too.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from udc_edge.core.errors import EngineError, ManifestError
from udc_edge.core.fileio import atomic_paths, json_text, sha256_file, write_json_atomic

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
    files_sha256: dict[str, str] = field(default_factory=dict)  # companion files (an IR's .bin): name -> sha256
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
    files = raw.get("files_sha256", {})
    if not (isinstance(files, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())):
        raise bad(f"'files_sha256' must map file names to sha256 strings, got {files!r}")
    if any(Path(k).name != k for k in files):
        raise bad(f"'files_sha256' may name only files beside the engine, got {sorted(files)}")
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


def write_engine(engine_path: str | os.PathLike, data: bytes, manifest: Manifest) -> Path:
    """Write an engine and its manifest as one unit.

    Both are written to temporary siblings first (a full disk leaves neither), then the
    engine is renamed into place and the manifest last. A crash between the two renames
    leaves the new engine beside no manifest or beside the old one, whose ``engine_sha256``
    no longer matches: :func:`read_manifest` refuses both, so no state is loadable but wrong.
    """
    engine_path = Path(engine_path)
    with atomic_paths(engine_path, manifest_path(engine_path)) as (eng_tmp, man_tmp):
        eng_tmp.write_bytes(data)
        manifest.manifest_sha256 = manifest.own_sha256()
        man_tmp.write_text(json_text(manifest.to_dict()))
    return engine_path


def write_engine_files(engine_path: str | os.PathLike, sources: dict[str, Path], manifest: Manifest) -> Path:
    """Write a multi-file engine (an OpenVINO IR: ``.xml`` + ``.bin``) and its manifest as one unit.

    ``sources`` maps each target file name (the engine's first) to a finished file to copy;
    as in :func:`write_engine`, every temporary is complete before the first rename and the
    manifest is renamed last, so a crash leaves no state that loads."""
    engine_path = Path(engine_path)
    targets = [engine_path.with_name(name) for name in sources]
    with atomic_paths(*targets, manifest_path(engine_path)) as tmps:
        for tmp, src in zip(tmps, sources.values(), strict=False):
            shutil.copyfile(src, tmp)
        manifest.manifest_sha256 = manifest.own_sha256()
        tmps[-1].write_text(json_text(manifest.to_dict()))
    return engine_path


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
    for name, sha in m.files_sha256.items():
        part = engine_path.with_name(name)
        if not part.is_file():
            raise EngineError(
                f"engine {engine_path} is missing its file {part}", "copy it beside the engine or rebuild"
            )
        if sha256_file(part) != sha:
            raise EngineError(f"engine file {part} does not match {path.name} (sha256 differs): it was altered "
                              "or truncated", "rebuild the engine")
    return m


ISA_PREFIXES = ("avx", "amx", "fma", "f16c", "sse4", "neon", "asimd", "sve", "bf16", "i8mm", "dotprod")


def cpu_facts() -> dict[str, Any]:
    """The CPU's model name and the ISA flags that decide CPU engine speed (from /proc/cpuinfo;
    empty where it does not exist)."""
    model, flags = "", set[str]()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {"cpu_model": model or platform.processor() or platform.machine(),
            "isa_flags": sorted(f for f in flags if f.startswith(ISA_PREFIXES))}


def host_device() -> dict[str, Any]:
    """What this machine is, for CPU engines: architecture, CPU model, ISA flags, core count."""
    return {"kind": "cpu", "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), **cpu_facts()}
