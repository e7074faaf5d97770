"""ONNX files and ONNX Runtime sessions as every stage after export uses them: the metadata
export writes, the session options it records, a session with a clear error, and per-node
profiling.

Here, below export, calibration and engines, because all three run ONNX Runtime: export to
prove parity, calibration to collect ranges, engines to serve and build. The ORT engine
itself is ``engines.ort``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from udc_edge.core.errors import EngineError
from udc_edge.core.fileio import work_dir

#: ONNX metadata key under which export records the session options a graph needs (JSON).
SESSION_OPTIONS_KEY = "udc_edge.session_options"
#: The input through which a purifier graph takes its diffusion noise (an input, never a
#: random op, so every backend can be fed the same draw).
NOISE_INPUT = "noise"


def image_feed(names: list[str] | tuple[str, ...], x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The feed for one image ``x``: ``x`` to every input, except the noise input, which
    gets a standard-normal draw of ``x``'s shape from ``rng`` (calibration, INT8 checks)."""
    return {n: (x if n != NOISE_INPUT else rng.standard_normal(x.shape).astype(np.float32)) for n in names}

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)



def onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` udc-edge export wrote (multiple, exporter, MACs per pixel)."""
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def recorded_session_options(path: str | os.PathLike, meta: dict[str, str] | None = None) -> dict:
    """ONNX Runtime session options export found the graph needs (metadata
    ``udc_edge.session_options``, JSON), or {}. ``meta``: the metadata, if already read."""
    raw = (onnx_metadata(path) if meta is None else meta).get(SESSION_OPTIONS_KEY)
    try:
        opts = json.loads(raw) if raw else {}
    except json.JSONDecodeError as exc:
        raise EngineError(f"{path}: metadata {SESSION_OPTIONS_KEY} is not JSON ({exc})",
                          "re-export the model with udc-edge export") from exc
    return opts if isinstance(opts, dict) else {}


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

    import onnxruntime as ort

    src = model if isinstance(model, bytes) else str(model)
    with work_dir("prof") as tmp:
        so = session_options(threads, options)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(src, sess_options=so, providers=list(providers))
        feed = dict(zip([i.name for i in sess.get_inputs()], inputs, strict=False))
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[tuple[str, str], float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            key = (ev["name"][: -len("_kernel_time")], ev.get("args", {}).get("op_name", ""))
            totals[key] = totals.get(key, 0.0) + ev.get("dur", 0) / 1000.0
    return sorted(((name, op, ms / runs) for (name, op), ms in totals.items()), key=lambda r: -r[2])
