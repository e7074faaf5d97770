"""Build specs: backend, precision, shape profile, calibration and exclusion options.

Invalid combinations raise; nothing is silently corrected (FP16 on the ONNX Runtime CPU
backend is refused, not run as FP32; BF16 is OpenVINO's only; INT8 without calibration
data is refused). ``auto`` (backend or precision) means: build the candidates, measure
them here, keep the fastest within ``min_fidelity`` dB of FP32 (``engines.auto``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from udc_edge.core.backends import Backend
from udc_edge.core.errors import UsageError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"
    AUTO = "auto"


AUTO_BACKEND = "auto"  # --backend auto: not a Backend, a request to try ort and openvino


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max NCHW shapes of the engine's input(s)."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    @staticmethod
    def parse_shape(text: str, name: str) -> tuple[int, int, int, int]:
        try:
            dims = tuple(int(d) for d in text.lower().split("x"))
        except ValueError as exc:
            raise UsageError(f"{name} {text!r} is not NxCxHxW", "e.g. 1x3x256x256") from exc
        if len(dims) != 4 or min(dims) < 1 or dims[1] != 3:
            raise UsageError(f"{name} {text!r} must be 4 positive dims NxCxHxW with C=3", "e.g. 1x3x256x256")
        return dims

    @classmethod
    def from_strings(cls, lo: str, opt: str, hi: str) -> ShapeProfile:
        p = cls(cls.parse_shape(lo, "--min-shape"), cls.parse_shape(opt, "--opt-shape"),
                cls.parse_shape(hi, "--max-shape"))
        if not all(a <= b <= c for a, b, c in zip(p.min, p.opt, p.max, strict=True)):
            raise UsageError(f"shape profile must satisfy min <= opt <= max per dim, got {p.min} {p.opt} {p.max}")
        return p

    @classmethod
    def from_options(cls, lo: str | None, opt: str | None, hi: str | None) -> ShapeProfile | None:
        """``--min-shape/--opt-shape/--max-shape``: all three make a profile, none gives None."""
        if not (lo or opt or hi):
            return None
        if not (lo and opt and hi):
            raise UsageError("give all of --min-shape, --opt-shape and --max-shape, or none")
        return cls.from_strings(lo, opt, hi)

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_exclude(text: str) -> tuple[tuple[str, ...], bool]:
    """``--exclude``: ``(node names kept in float, whether to exclude by measured sensitivity)``;
    the text ``auto`` or ``auto:robust`` asks for the latter (``BuildSpec.robust_exclude`` tells them apart)."""
    if text.startswith("auto") and text not in ("auto", "auto:robust"):
        raise UsageError(f"--exclude {text!r}: automatic exclusion is 'auto' or 'auto:robust'")
    return tuple(n for n in text.split(",") if n and not n.startswith("auto")), text.startswith("auto")


DEFAULT_CALIB_SIZE = 128  # dynamic-shape models with no shape profile calibrate at this size
#: The attack --exclude auto:robust ranks layers with when --calib-adversarial does not name one.
ROBUST_DEFAULT = "pgd:8/255"
DEFAULT_TRT_PROFILE = ShapeProfile((1, 3, 64, 64), (1, 3, 256, 256), (1, 3, 1024, 1024))


@dataclass(frozen=True)
class BuildSpec:
    """Everything ``udc-edge build`` needs besides the ONNX file and the output path."""

    backend: Backend | str = Backend.ORT  # a Backend, or AUTO_BACKEND
    precision: Precision = Precision.FP32
    calib: str | None = None
    calib_count: int = 16
    calib_size: int | None = None  # None: the engine's run size when known, else DEFAULT_CALIB_SIZE
    calib_method: str = "percentile"
    calib_cache: str | None = None
    target: str | None = None  # cpu | tensorrt; default by backend
    exclude: tuple[str, ...] = ()
    auto_exclude: bool = False
    robust_exclude: bool = False  # --exclude auto:robust: rank layers by clean and attacked fidelity
    calib_adversarial: str | None = None  # e.g. "pgd:8/255": attacked copies of the calibration images
    min_fidelity: float = 40.0
    profile: ShapeProfile | None = None
    threads: int = 0
    prequantised: bool = False  # the ONNX already carries Q/DQ (a bundle's qdq-*.onnx)
    inputs: tuple[str, ...] = ()  # NAME=FILE.npy|VALUE: extra graph inputs fed during calibration

    def __post_init__(self) -> None:
        if self.backend != AUTO_BACKEND:
            object.__setattr__(self, "backend", Backend.parse(self.backend))
        try:
            object.__setattr__(self, "precision", Precision(self.precision))
        except ValueError:
            raise UsageError(f"--precision {getattr(self.precision, 'value', self.precision)!r} is not offered",
                             f"choose one of {', '.join(p.value for p in Precision)}") from None
        if self.precision == Precision.BF16 and self.backend not in (Backend.OPENVINO, AUTO_BACKEND):
            raise UsageError(f"--precision bf16 is offered on the OpenVINO backend only, not {self.backend}",
                             "use --backend openvino (CPUs with avx512_bf16 or AMX)")
        if self.precision == Precision.FP16 and self.backend in (Backend.OPENVINO, AUTO_BACKEND):
            raise UsageError(f"--precision fp16 is not offered on --backend {self.backend} (CPU)",
                             "use --precision bf16, fp32, int8 or auto")
        if self.backend == AUTO_BACKEND and self.prequantised:
            raise UsageError("--backend auto cannot build from a pre-quantised Q/DQ model", "give the float ONNX")
        if self.calib_size is not None and self.calib_size < 8:
            raise UsageError(f"--calib-size must be >= 8 px, got {self.calib_size}")
        if self.backend is Backend.ORT and self.precision == Precision.FP16:
            raise UsageError(
                "--precision fp16 is not offered on the ONNX Runtime CPU backend (no fast FP16 kernels; "
                "it would run slower than FP32 or be silently upcast)",
                "use --precision fp32 or int8, or --backend trt on an NVIDIA GPU",
            )
        if (self.precision in (Precision.INT8, Precision.AUTO) or self.backend == AUTO_BACKEND) and not self.calib \
                and not self.prequantised:
            what = "--backend auto" if self.backend == AUTO_BACKEND else f"--precision {self.precision.value}"
            raise UsageError(f"{what} needs calibration data (to calibrate and to measure the candidates)",
                             "give --calib DIR (degraded images) or --calib synth:poled")
        if self.backend is Backend.TRT and self.target == "cpu":
            raise UsageError("--target cpu makes asymmetric Q/DQ, which TensorRT rejects", "use --target tensorrt")
        if self.calib_count < 1:
            raise UsageError(f"--calib-count must be >= 1, got {self.calib_count}")
        if self.calib_adversarial is not None or self.robust_exclude:
            from udc_edge.calibration.adversarial import parse_calib_adversarial

            parse_calib_adversarial(self.calib_adversarial or ROBUST_DEFAULT)  # refuse a bad one now
            if self.precision not in (Precision.INT8, Precision.AUTO) or self.prequantised:
                raise UsageError("--calib-adversarial and --exclude auto:robust apply to INT8 builds that calibrate",
                                 "use --precision int8 with --calib")
        if self.robust_exclude and not self.auto_exclude:
            raise UsageError("robust_exclude needs auto_exclude", "use --exclude auto:robust")
        if self.min_fidelity <= 0:
            raise UsageError(f"--min-fidelity must be > 0 dB, got {self.min_fidelity}")

    @property
    def adversarial_attack(self):
        """The attack crafting attacked calibration / fidelity images, or None."""
        if self.calib_adversarial is None and not self.robust_exclude:
            return None
        from udc_edge.calibration.adversarial import parse_calib_adversarial

        return parse_calib_adversarial(self.calib_adversarial or ROBUST_DEFAULT)

    @property
    def quant_target(self) -> str:
        if self.target:
            return self.target
        return self.backend.qdq_target if isinstance(self.backend, Backend) else "cpu"  # AUTO_BACKEND: cpu
