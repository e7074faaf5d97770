"""The one backend vocabulary: ``Backend`` (the CLI's ``--backend`` values) and the single
place that maps it to the spelling engine manifests and reports keep on disk
(``onnxruntime``, ``openvino``, ``tensorrt``) and to the Q/DQ flavour a backend's INT8 needs.

In ``core`` because calibration, engines, deploy and doctor all speak it."""

from __future__ import annotations

from enum import Enum

from udc_edge.core.errors import UsageError


class Backend(str, Enum):
    """A deployment backend; the value is the CLI spelling."""

    ORT = "ort"
    TRT = "trt"
    OPENVINO = "openvino"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | Backend, option: str = "--backend") -> Backend:
        """``value`` as a Backend, or a UsageError naming the choices."""
        try:
            return cls(value)
        except ValueError:
            choices = " or ".join(b.value for b in cls)
            raise UsageError(f"{option} must be {choices}, got {value!r}") from None

    @property
    def manifest_name(self) -> str:
        """How manifests, build reports and ``EngineInfo`` name it (kept for compatibility)."""
        return _MANIFEST_NAMES[self]

    @classmethod
    def from_manifest(cls, name: str) -> Backend | None:
        """The backend a manifest's ``backend`` value names, or None if unknown."""
        return next((b for b, n in _MANIFEST_NAMES.items() if n == name), None)

    @property
    def qdq_target(self) -> str:
        """The Q/DQ flavour its INT8 takes by default: ``cpu`` (u8/s8) or ``tensorrt`` (symmetric s8)."""
        return _QDQ_TARGETS[self]


_MANIFEST_NAMES = {Backend.ORT: "onnxruntime", Backend.TRT: "tensorrt", Backend.OPENVINO: "openvino"}
_QDQ_TARGETS = {
    Backend.ORT: "cpu",
    Backend.TRT: "tensorrt",
    Backend.OPENVINO: "cpu",
}  # OpenVINO: sensitivity on cpu Q/DQ
#: The Q/DQ flavours (``--target``): asymmetric u8/s8 for CPUs, symmetric s8 for TensorRT.
QDQ_TARGETS = ("cpu", "tensorrt")
