"""What every backend's build starts from: the checked source ONNX (``SourceModel``), the
calibration images (one split and size for every backend), an ONNX Runtime runner for
fidelity checks, and the ``BuildReport`` each build returns. Below ``build``, ``auto`` and
``openvino_build`` so that none of them imports another upward."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from udc_edge.calibration.dataset import load_calibration_set
from udc_edge.core.errors import EngineError, InputError, UsageError
from udc_edge.core.progress import Advance
from udc_edge.core.timing import side_by_side
from udc_edge.engines.spec import DEFAULT_CALIB_SIZE, BuildSpec
from udc_edge.export.onnxrt import image_feed, make_session, recorded_session_options


@dataclass
class BuildReport:
    engine: str
    backend: str
    requested_precision: str
    precision: str
    size_mb: float
    seconds: float
    fidelity_db: float | None = None
    int8_speedup_vs_fp32: float | None = None
    excluded: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    calibration: dict | None = None
    attacked_fidelity_db: float | None = None  # INT8 vs FP32 on inputs attacked on FP32
    choices: list[dict] = field(default_factory=list)  # each exclusion tried: clean and attacked dB
    inference_precision: str | None = None  # what the compiled model reports it runs in (OpenVINO)
    candidates: list[dict] = field(default_factory=list)  # --precision/--backend auto: every one tried
    choice: str = ""  # --precision/--backend auto: why the winner won

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (f"built {self.engine} ({self.backend} {self.precision}"
                + (f", asked {self.requested_precision}" if self.requested_precision != self.precision else "")
                + f", {self.size_mb:.2f} MB) in {self.seconds:.1f} s")
        if self.inference_precision:
            text += f"; runs in {self.inference_precision} (as the compiled model reports)"
        if self.fidelity_db is not None:
            text += f"; output vs FP32 {self.fidelity_db:.1f} dB PSNR"
        if self.attacked_fidelity_db is not None:
            text += f" clean, {self.attacked_fidelity_db:.1f} dB attacked"
        if self.int8_speedup_vs_fp32 is not None:
            text += f"; INT8 {self.int8_speedup_vs_fp32:.2f}x the speed of FP32"
        if self.excluded:
            text += f"; {len(self.excluded)} layer(s) kept in float"
        for c in self.candidates:
            ms = f"{c['ms']:8.2f} ms" if c.get("ms") is not None else "       - ms"
            db = f"{c['fidelity_db']:6.1f} dB" if c.get("fidelity_db") is not None else "     - dB"
            text += f"\n  candidate {c['name']:<16} {ms}  {db}  {c['verdict']}"
        if self.choice:
            text += f"\nchose {self.choice}"
        for w in self.warnings:
            text += f"\nwarning: {w}"
        return text


def inspect_onnx(path: str | os.PathLike) -> tuple[onnx.ModelProto, int, list[str]]:
    """Load and check an ONNX file: (model, network multiple, input names)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file {path} does not exist", "export one with udc-edge export")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise EngineError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc)[:200]})",
                          "re-export it with udc-edge export; the file may be truncated") from exc
    from udc_edge.engines.feeds import recorded_extras

    inits = {i.name for i in model.graph.initializer}
    meta = {p.key: p.value for p in model.metadata_props}
    extras = {e["name"] for e in recorded_extras(meta)}
    inputs = [i for i in model.graph.input if i.name not in inits]
    for i in inputs:
        if i.name in extras:
            continue
        rank = len(i.type.tensor_type.shape.dim)
        if rank != 4:
            raise InputError(f"{path}: input {i.name!r} has rank {rank}, expected NCHW images (rank 4)",
                             "export the restorer with a 1x3xHxW input")
    return model, int(meta.get("udc_edge.multiple", "1")), [i.name for i in inputs]


def _runner(threads: int, options: dict | None = None, extras: dict[str, np.ndarray] | None = None):
    def run(model_bytes: bytes, images: np.ndarray, names: tuple[str, ...] = ("input",)) -> np.ndarray:
        sess = make_session(model_bytes, threads=threads, options=options)
        feeds = [i.name for i in sess.get_inputs()]
        rng = np.random.default_rng(0)
        outs = []
        for k in range(len(images)):
            x = images[k : k + 1]
            feed = image_feed(feeds, x, rng) | {n: v for n, v in (extras or {}).items() if n in feeds}
            outs.append(sess.run(None, feed)[0])
        return np.concatenate(outs)
    return run


def _speedup(fp32: bytes, int8: bytes, x: np.ndarray, threads: int, options: dict | None = None,
             extras: dict[str, np.ndarray] | None = None) -> float:
    """FP32 time / INT8 time, measured in alternating rounds on the same image."""
    calls = []
    for model in (fp32, int8):
        sess = make_session(model, threads=threads, options=options)
        feed = {i.name: (extras or {}).get(i.name, x) for i in sess.get_inputs()}
        calls.append(lambda sess=sess, feed=feed: sess.run(None, feed))
    t32, t8 = side_by_side(calls[0], calls[1], runs=3, rounds=2)
    return t32 / t8


@dataclass(frozen=True)
class _Source:
    """The source ONNX of a build, read and parsed once: bytes, hash, model, metadata."""

    data: bytes
    sha256: str
    model: onnx.ModelProto
    names: list[str]
    meta: dict[str, str]
    session_options: dict
    extras: dict  # extra input name -> batch-1 value fed with every image (engines.feeds)

    @classmethod
    def of(cls, path: Path, model: onnx.ModelProto, names: list[str], inputs: tuple[str, ...] = ()) -> _Source:
        from udc_edge.engines.feeds import extra_values, parse_input_options, recorded_extras

        data = path.read_bytes()
        meta = {p.key: p.value for p in model.metadata_props}
        extras = extra_values(recorded_extras(meta), parse_input_options(inputs), f"ONNX {path}")
        return cls(data, hashlib.sha256(data).hexdigest(), model, names, meta, recorded_session_options(path, meta),
                   extras)

    def manifest_extras(self) -> list[dict]:
        """The recorded extra inputs with the values this build used as their examples."""
        from udc_edge.engines.feeds import recorded_extras

        return [{**e, "example": self.extras[e["name"]].flatten().tolist()} for e in recorded_extras(self.meta)]


def is_qdq(model: onnx.ModelProto) -> bool:
    """Whether a model is already quantised (explicit Q/DQ nodes)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)

def check_calibratable(model: onnx.ModelProto, onnx_path: str | os.PathLike) -> None:
    """INT8 calibration feeds RGB images (float32 Nx3xHxW) to every input but a purifier's
    ``noise``: refuse, in one line, a graph whose inputs cannot take them. Extra inputs
    recorded at export (a PSF code) are fed their ``--input`` values instead."""
    from udc_edge.engines.feeds import recorded_extras

    extras = {e["name"] for e in recorded_extras({p.key: p.value for p in model.metadata_props})}
    for inp in model.graph.input:
        if inp.name in extras:
            continue
        t = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None
        if dtype != np.float32 or len(dims) != 4 or dims[1] not in (None, 3):
            shown = "x".join("?" if d is None else str(d) for d in dims)
            raise UsageError(
                f"INT8 calibration of {onnx_path} feeds RGB images (float32 Nx3xHxW) to its input {inp.name!r}, "
                f"which takes {dtype if dtype is not None else 'an unknown type'} of shape {shown}",
                "build it with --precision fp32, or export a wrapper whose inputs are RGB images in [0, 1]",
            )


def calibration_images(model: onnx.ModelProto, spec: BuildSpec):
    """The calibration set of a build (the same for every backend): ``(set, calibration
    images, held-out images)``. Size: ``--calib-size``, else the engine's run size when known
    (a fixed-shape graph's H x W, the shape profile's opt), else ``DEFAULT_CALIB_SIZE``."""
    if spec.calib is None:  # BuildSpec lets prequantised builds go without --calib; this graph is not one
        raise UsageError("the ONNX graph has no Q/DQ nodes, so an INT8 build needs calibration data",
                         "give --calib DIR (degraded images) or --calib synth:poled")
    hw = [d.dim_value if d.HasField("dim_value") else 0 for d in model.graph.input[0].type.tensor_type.shape.dim][2:]
    fixed = all(hw)
    if fixed and spec.calib_size is not None and spec.calib_size != max(hw):
        raise UsageError(f"--calib-size {spec.calib_size} differs from the model's fixed input {hw[0]}x{hw[1]}",
                         f"leave --calib-size out (it calibrates at {hw[0]}x{hw[1]}) or export with --dynamic")
    size = max(hw) if fixed else spec.calib_size or (max(spec.profile.opt[2:]) if spec.profile else DEFAULT_CALIB_SIZE)
    calib = load_calibration_set(spec.calib, spec.calib_count, size, strict=fixed)
    if fixed:  # a --fixed-shape graph: calibrate at its own H x W
        calib = type(calib)(np.ascontiguousarray(calib.images[:, :, : hw[0], : hw[1]]), calib.source)
    cal_imgs, held = calib.split(holdout=4)
    return calib, cal_imgs, held


def graph_fails(onnx_path: str | os.PathLike, images: np.ndarray, exc: BaseException) -> EngineError:
    """One line for a graph ONNX Runtime cannot run on the build's calibration images."""
    from udc_edge.export.onnx_export import short_error

    h, w = images.shape[2:]
    return EngineError(f"{onnx_path} fails on the {h}x{w} calibration images: {short_error(exc)}",
                       "export so the graph runs at that size, or calibrate on images of a size it takes (--calib DIR)")
def adversarial_images(onnx_path: Path, src: _Source, spec: BuildSpec, cal: np.ndarray, held: np.ndarray,
                       progress: Advance) -> tuple[np.ndarray, np.ndarray | None, dict | None]:
    """``(calibration images, plus attacked copies with --calib-adversarial; attacked held-out
    images; what was done)``, crafted on a differentiable replica of the FP32 graph; unchanged
    (``cal, None, None``) when the build asks for neither. The same for every backend."""
    a = spec.adversarial_attack
    if a is None:
        return cal, None, None
    from udc_edge.calibration.adversarial import craft
    from udc_edge.engines.replica import OnnxReplica, ReplicaError

    if len(src.names) != 1:
        raise UsageError(f"--calib-adversarial / --exclude auto:robust need a one-input graph; {onnx_path} takes "
                         f"{src.names}", "build the restorer alone")
    try:
        fp32 = OnnxReplica(src.model, name=onnx_path.name).eval()
    except ReplicaError as exc:
        raise UsageError(f"cannot craft attacks on {onnx_path}: {exc.message}",
                         "build without --calib-adversarial and --exclude auto:robust") from exc
    progress(0, status=f"crafting {a.name} {a.eps * 255:g}/255 on FP32 ({len(held)} held-out images)")
    held_adv = craft(fp32, held, a)
    info = {"attack": a.name, "eps": a.eps, "steps": a.steps, "crafted_on": "FP32 graph (replica)",
            "objective": "clean", "held_out_attacked": len(held)}
    if spec.calib_adversarial:
        progress(0, status=f"crafting {a.name} on FP32 ({len(cal)} calibration images)")
        cal = np.concatenate([cal, craft(fp32, cal, a)])
        info["calibration_added"] = len(cal) // 2
    return cal, held_adv, info
