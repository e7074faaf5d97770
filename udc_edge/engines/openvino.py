"""OpenVINO backend: IR engines (``NAME.xml`` + ``NAME.bin``) on the CPU, FP32 / BF16 / INT8.

openvino and nncf are imported lazily (the ``cpu`` extra brings them); without them every
other backend keeps working and ``--backend openvino`` says which extra to install.

Telemetry is off: the runtime itself sends nothing, but ``openvino.convert_model`` (ovc)
and nncf send usage events through ``openvino_telemetry`` when it is installed. udc-edge
never calls ``convert_model`` (``Core.read_model`` reads the ONNX through the frontend
without a telemetry extension) and sets ``NNCF_CI=1`` before importing nncf, which makes
nncf's telemetry a stub (``nncf/telemetry/wrapper.py``). Nothing is written to the
user's home (no opt-out consent file).

The compiled model's ``INFERENCE_PRECISION_HINT`` is read back and recorded: the hint asked
for is not necessarily what runs. Threads: ``INFERENCE_NUM_THREADS`` (0: OpenVINO's default).
Version policy: an IR built by another OpenVINO release (year.minor) is refused on load,
since its measured precision, speed and fidelity were those of the other release.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.core.errors import BackendUnavailableError, EngineError
from udc_edge.engines.base import Engine, EngineInfo, IOSpec
from udc_edge.engines.manifest import Manifest, cpu_facts

EXTRA_HINT = "install the cpu extra: pip install 'udc-edge[cpu]' (brings openvino and nncf)"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
HINTS = {"fp32": "f32", "bf16": "bf16"}  # precision -> INFERENCE_PRECISION_HINT


def is_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def require_openvino():
    """The openvino module, or a one-line error naming the extra to install."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError("--backend openvino needs OpenVINO, which is not installed", EXTRA_HINT) from exc
    return openvino


def require_nncf():
    """The nncf module with its telemetry switched off (``NNCF_CI`` before the import)."""
    require_openvino()
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
    except ImportError as exc:
        raise BackendUnavailableError("OpenVINO INT8 needs NNCF, which is not installed", EXTRA_HINT) from exc
    import logging

    nncf.set_log_level(logging.ERROR)  # its INFO lines would break the command's one-line output
    return nncf


def get_version() -> str:
    """OpenVINO's release, e.g. ``2026.4.1`` (the build suffix dropped)."""
    return require_openvino().__version__.split("-")[0]


def nncf_version() -> str | None:
    try:
        return require_nncf().__version__
    except BackendUnavailableError:
        return None


def release(version: str) -> str:
    """``year.minor`` of a version string: the unit of the version policy."""
    return ".".join(version.split(".")[:2])


@lru_cache(maxsize=1)
def core():
    return require_openvino().Core()


def supports_bf16() -> bool:
    """Whether this CPU runs BF16 natively (avx512_bf16 or AMX), by its ISA flags and OpenVINO's view."""
    flags = set(cpu_facts()["isa_flags"])
    if not flags & set(BF16_FLAGS):
        return False
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def compile_config(hint: str | None, threads: int = 0) -> dict:
    """The compile properties: latency mode, the precision hint, thread count."""
    cfg: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if hint:
        cfg["INFERENCE_PRECISION_HINT"] = hint
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    return cfg


def compile_model(model, config: dict):
    """Compile on the CPU with a clear error on failure."""
    try:
        return core().compile_model(model, "CPU", config)
    except RuntimeError as exc:
        raise EngineError(f"OpenVINO cannot compile the model: {str(exc).splitlines()[0][:300]}",
                          "re-export the model (udc-edge export) or rebuild the engine") from exc


def inference_precision(compiled) -> str:
    """What the compiled model runs in (``f32``, ``bf16``, ...), as it reports it."""
    t = compiled.get_property("INFERENCE_PRECISION_HINT")
    return t.to_string() if hasattr(t, "to_string") else str(t)


class OpenVinoEngine(Engine):
    """An OpenVINO IR compiled for the CPU with the manifest's precision hint and ``threads``."""

    backend = "openvino"

    def __init__(self, path: str | os.PathLike, manifest: Manifest | None = None, threads: int = 0,
                 multiple: int | None = None):
        super().__init__(manifest, multiple)
        self.path = Path(path)
        self.threads = threads
        self.compiled: Any = None  # an openvino CompiledModel while active (openvino's types are not checked)
        self._request: Any = None
        if manifest is not None:
            built, here = manifest.backend_version, get_version()
            if release(built) != release(here):
                raise EngineError(f"engine {self.path} was built with OpenVINO {built}, this is {here}",
                                  "rebuild it here with udc-edge build --backend openvino")

    def _activate(self) -> None:
        opts = dict(self.manifest.session_options) if self.manifest else {}
        cfg = compile_config(opts.get("INFERENCE_PRECISION_HINT"), self.threads)
        try:
            model = core().read_model(str(self.path))
        except RuntimeError as exc:
            raise EngineError(f"OpenVINO cannot read {self.path}: {str(exc).splitlines()[0][:300]}",
                              "rebuild the engine; its .xml and .bin must both be complete") from exc
        self.compiled = compile_model(model, cfg)
        self._request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self.compiled = self._request = None

    def info(self) -> EngineInfo:
        if self.compiled is None:
            self.activate()
        def spec(port):
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            return IOSpec(port.get_any_name(), shape, "float32")
        prec = self.manifest.precision if self.manifest else "fp32"
        req = self.manifest.requested_precision if self.manifest else prec
        return EngineInfo("openvino", get_version(), prec, req, [spec(p) for p in self.compiled.inputs],
                          [spec(p) for p in self.compiled.outputs],
                          {"inference_precision": inference_precision(self.compiled),
                           "threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS"))})

    def _infer(self, *inputs: np.ndarray) -> np.ndarray:
        ov = require_openvino()
        for i, x in enumerate(inputs):
            want = self.compiled.inputs[i].get_partial_shape()
            if not want.compatible(ov.PartialShape(list(x.shape))):
                raise EngineError(f"input of shape {tuple(x.shape)} does not fit engine {self.path.name}'s input "
                                  f"{want}", "give an image of that size, or export with --dynamic and rebuild")
            self._request.set_input_tensor(i, ov.Tensor(np.ascontiguousarray(x)))
        self._request.infer()
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)
