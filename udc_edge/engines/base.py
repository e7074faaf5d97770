"""One Engine interface for every backend (torch reference, ONNX Runtime, TensorRT).

An engine is a context manager with ``activate()``/``deactivate()`` (as Polygraphy's
runners); ``infer(feed) -> {name: array}`` runs named float32 NCHW inputs and returns every
output by name, and ``engine(x) -> y`` is the convenient single-output form. Optional
capabilities are protocols (``LayerProfiler``), checked with ``isinstance``. It checks the input
against its shape profile before running, pads H/W to the network's multiple on the host
and crops back (so graphs stay free of dynamic padding), and describes itself: backend,
version, precision asked for and built, I/O names, shapes and dtypes.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from udc_edge.core.errors import EngineError
from udc_edge.engines.manifest import Manifest


@dataclass(frozen=True)
class IOSpec:
    """One input or output tensor: name, shape (None for dynamic dims), dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"


@dataclass
class EngineInfo:
    backend: str
    version: str
    precision: str
    requested_precision: str
    inputs: list[IOSpec] = field(default_factory=list)
    outputs: list[IOSpec] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class LayerTime(NamedTuple):
    """One layer of a profile: name, op type ("" where the backend does not report it, as
    TensorRT), mean milliseconds per run."""

    layer: str
    op: str
    ms: float


@runtime_checkable
class LayerProfiler(Protocol):
    """Optional capability: per-layer mean times over ``runs`` runs of ``inputs``."""

    def profile_layers(self, *inputs: np.ndarray, runs: int = 10) -> list[LayerTime]: ...


class Engine(abc.ABC):
    """Base class: subclasses implement ``_activate``, ``_deactivate`` and ``_infer``."""

    backend = "base"

    def __init__(self, manifest: Manifest | None = None, multiple: int | None = None):
        self.manifest = manifest
        self._multiple = multiple
        self.active = False
        self._input_names: list[str] = []  # read from info() once per activation
        self._output_names: list[str] = []

    # -- lifecycle -------------------------------------------------------------
    def activate(self) -> Engine:
        if not self.active:
            self._activate()
            self.active = True
            info = self.info()
            self._input_names = [i.name for i in info.inputs]
            self._output_names = [o.name for o in info.outputs]
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self) -> Engine:  # noqa: PYI034
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------
    @property
    def multiple(self) -> int:
        if self._multiple is not None:
            return self._multiple
        return int(self.manifest.multiple) if self.manifest else 1

    @property
    def num_inputs(self) -> int:
        return len(self.info().inputs)

    def check_input(self, x: np.ndarray, name: str = "input") -> None:
        """Refuse a wrong dtype, rank, channel count or a size outside the shape profile."""
        if not isinstance(x, np.ndarray):
            raise EngineError(f"{name}: expected a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise EngineError(f"{name}: expected float32, got {x.dtype}", "convert with x.astype(np.float32)")
        if x.ndim != 4:
            raise EngineError(f"{name}: expected an NCHW array (4 dims), got shape {x.shape}")
        if x.shape[1] != 3:
            raise EngineError(f"{name}: expected 3 channels (RGB), got {x.shape[1]}")
        prof = self.manifest.shape_profile if self.manifest else None
        if prof:
            lo, hi = prof["min"], prof["max"]
            h, w = _pad(x.shape[2], self.multiple), _pad(x.shape[3], self.multiple)
            n = x.shape[0]
            if not (lo[0] <= n <= hi[0] and lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3]):
                raise EngineError(
                    f"{name}: shape {x.shape} (padded to {n}x3x{h}x{w}) is outside the engine's "
                    f"profile min {tuple(lo)} max {tuple(hi)}",
                    "rebuild with a wider --min-shape/--max-shape, or run tiled (--tile)",
                )

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on named inputs (every input, float32 NCHW) and return every output by name;
        H/W are padded to the network's multiple and outputs of the padded size cropped back."""
        self.activate()
        names = self._input_names
        if set(feed) != set(names):
            raise EngineError(f"engine takes inputs {names}, got {sorted(feed)}")
        for n in names:
            self.check_input(feed[n], n)
        h, w = feed[names[0]].shape[2:]
        m = self.multiple
        hp, wp = _pad(h, m), _pad(w, m)
        outs = self._infer_all([pad_array(feed[n], m) for n in names])
        return {k: np.ascontiguousarray(y[:, :, :h, :w]) if y.ndim == 4 and y.shape[2:] == (hp, wp) else y
                for k, y in outs.items()}

    def _infer_all(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name; backends that run multi-output graphs override this (this
        default serves single-output backends from ``_infer``)."""
        return {self._output_names[0]: self._infer(*inputs)}

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        """The first output for positional inputs (the restorer's one image out)."""
        if not self.active:
            self.activate()
        names = self._input_names
        if len(inputs) != len(names):
            raise EngineError(f"engine takes {len(names)} input(s) {names}, got {len(inputs)}")
        for x, n in zip(inputs, names, strict=True):
            self.check_input(x, n)
        h, w = inputs[0].shape[2:]
        m = self.multiple
        padded = [pad_array(x, m) for x in inputs]
        y = self._infer(*padded)
        if y.shape[2:] == (h, w):
            return y
        return np.ascontiguousarray(y[:, :, :h, :w])

    @abc.abstractmethod
    def info(self) -> EngineInfo: ...

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, *inputs: np.ndarray) -> np.ndarray: ...


def _pad(n: int, m: int) -> int:
    """``n`` rounded up to a multiple of ``m`` (``models.padding.padded_size`` without
    importing torch: engines run on devices that have none)."""
    return -(-n // m) * m


def pad_array(x: np.ndarray, m: int) -> np.ndarray:
    """Reflect-pad H/W at the bottom/right up to a multiple of ``m`` (replicate if too small)."""
    h, w = x.shape[2:]
    ph, pw = _pad(h, m) - h, _pad(w, m) - w
    if ph == 0 and pw == 0:
        return x
    mode: Literal["reflect", "edge"] = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
