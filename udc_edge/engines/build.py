"""``udc-edge build``: an ONNX file -> an engine file plus its manifest.

ONNX Runtime: FP32 is the checked ONNX itself; INT8 is a Q/DQ model from real
calibration images (cached ranges, optional automatic exclusion of sensitive layers);
``auto`` builds both and keeps the fastest one that meets the fidelity target. Every
INT8 build measures its output against FP32 (PSNR on held-out calibration images) and its
speed against FP32, and says in the summary and manifest when INT8 is slower or below
target. TensorRT builds go through ``engines.tensorrt`` (explicit quantisation only).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from udc_edge.calibration.dataset import load_calibration_set
from udc_edge.calibration.qdq import auto_exclude, fidelity, quantize_bytes
from udc_edge.calibration.ranges import cached_ranges
from udc_edge.core.backends import Backend
from udc_edge.core.errors import EngineError, InputError, UsageError
from udc_edge.core.fileio import write_bytes_atomic
from udc_edge.core.progress import Advance, noop
from udc_edge.core.timing import side_by_side
from udc_edge.engines.manifest import Manifest, host_device, write_manifest
from udc_edge.engines.ort import get_version
from udc_edge.engines.spec import DEFAULT_TRT_PROFILE, BuildSpec, Precision
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

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (f"built {self.engine} ({self.backend} {self.precision}"
                + (f", asked {self.requested_precision}" if self.requested_precision != self.precision else "")
                + f", {self.size_mb:.2f} MB) in {self.seconds:.1f} s")
        if self.fidelity_db is not None:
            text += f"; output vs FP32 {self.fidelity_db:.1f} dB PSNR"
        if self.attacked_fidelity_db is not None:
            text += f" clean, {self.attacked_fidelity_db:.1f} dB attacked"
        if self.int8_speedup_vs_fp32 is not None:
            text += f"; INT8 {self.int8_speedup_vs_fp32:.2f}x the speed of FP32"
        if self.excluded:
            text += f"; {len(self.excluded)} layer(s) kept in float"
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
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    for i in inputs:
        rank = len(i.type.tensor_type.shape.dim)
        if rank != 4:
            raise InputError(f"{path}: input {i.name!r} has rank {rank}, expected NCHW images (rank 4)",
                             "export the restorer with a 1x3xHxW input")
    meta = {p.key: p.value for p in model.metadata_props}
    return model, int(meta.get("udc_edge.multiple", "1")), [i.name for i in inputs]


def _runner(threads: int, options: dict | None = None):
    def run(model_bytes: bytes, images: np.ndarray, names: tuple[str, ...] = ("input",)) -> np.ndarray:
        sess = make_session(model_bytes, threads=threads, options=options)
        feeds = [i.name for i in sess.get_inputs()]
        rng = np.random.default_rng(0)
        outs = []
        for k in range(len(images)):
            x = images[k : k + 1]
            outs.append(sess.run(None, image_feed(feeds, x, rng))[0])
        return np.concatenate(outs)
    return run


def _speedup(fp32: bytes, int8: bytes, x: np.ndarray, threads: int, options: dict | None = None) -> float:
    """FP32 time / INT8 time, measured in alternating rounds on the same image."""
    runs = []
    for model in (fp32, int8):
        sess = make_session(model, threads=threads, options=options)
        feed = {i.name: x for i in sess.get_inputs()}
        runs.append(lambda sess=sess, feed=feed: sess.run(None, feed))
    t32, t8 = side_by_side(*runs, runs=3, rounds=2)
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

    @classmethod
    def of(cls, path: Path, model: onnx.ModelProto, names: list[str]) -> _Source:
        data = path.read_bytes()
        meta = {p.key: p.value for p in model.metadata_props}
        return cls(data, hashlib.sha256(data).hexdigest(), model, names, meta, recorded_session_options(path, meta))


def is_qdq(model: onnx.ModelProto) -> bool:
    """Whether a model is already quantised (explicit Q/DQ nodes)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _adversarial(onnx_path: Path, src: _Source, spec: BuildSpec, cal: np.ndarray, held: np.ndarray,
                 progress: Advance) -> tuple[np.ndarray, np.ndarray, dict]:
    """(calibration images, plus attacked copies with --calib-adversarial; attacked held-out
    images; what was done), crafted on a differentiable replica of the FP32 graph."""
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
    a = spec.adversarial_attack
    progress(0, status=f"crafting {a.name} {a.eps * 255:g}/255 on FP32 ({len(held)} held-out images)")
    held_adv = craft(fp32, held, a)
    info = {"attack": a.name, "eps": a.eps, "steps": a.steps, "crafted_on": "FP32 graph (replica)",
            "objective": "clean", "held_out_attacked": len(held)}
    if spec.calib_adversarial:
        progress(0, status=f"crafting {a.name} on FP32 ({len(cal)} calibration images)")
        cal = np.concatenate([cal, craft(fp32, cal, a)])
        info["calibration_added"] = len(cal) // 2
    return cal, held_adv, info


def _check_calibratable(model: onnx.ModelProto, onnx_path: Path) -> None:
    """INT8 calibration feeds RGB images (float32 Nx3xHxW) to every input but a purifier's
    ``noise``: refuse, in one line, a graph whose inputs cannot take them."""
    for inp in model.graph.input:
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


def _int8(onnx_path: Path, src: _Source, spec: BuildSpec, out: Path, progress: Advance) -> tuple[bytes, dict]:
    model, names, opts, fp32 = src.model, src.names, src.session_options, src.data
    if is_qdq(model):  # e.g. a bundle's qdq-*.onnx: quantised already, calibration travelled with it
        return fp32, {"calibration": {"source": "pre-quantised Q/DQ model", "target": spec.quant_target},
                                        "fidelity_met": True, "excluded": [], "prequantised": True}
    _check_calibratable(model, onnx_path)
    hw = [d.dim_value if d.HasField("dim_value") else 0 for d in model.graph.input[0].type.tensor_type.shape.dim][2:]
    calib = load_calibration_set(spec.calib, spec.calib_count, max(hw) if all(hw) else spec.calib_size)
    if all(hw):  # a --fixed-shape graph: calibrate at its own H x W
        calib = type(calib)(np.ascontiguousarray(calib.images[:, :, : hw[0], : hw[1]]), calib.source)
    cal_imgs, held = calib.split(holdout=4)
    adv_spec, adv_info, held_adv = spec.adversarial_attack, None, None
    if adv_spec is not None:
        cal_imgs, held_adv, adv_info = _adversarial(onnx_path, src, spec, cal_imgs, held, progress)
    progress(0, status=f"calibrating ({spec.calib_method}, {len(cal_imgs)} images)")
    cache = spec.calib_cache or str(out.with_name(out.name + ".calib.json"))
    sub = type(calib)(cal_imgs, calib.source + (f" + {spec.calib_adversarial}" if spec.calib_adversarial else ""))
    ranges, cinfo = cached_ranges(onnx_path, sub, spec.calib_method, symmetric=spec.quant_target == Backend.TRT.qdq_target,
                                  cache=cache, input_names=tuple(names), session_options=opts,
                                  onnx_sha256=src.sha256)
    run = _runner(spec.threads, opts)
    ref = run(fp32, held)
    progress(0, status="quantising")
    attacked = None
    if adv_spec is not None:
        attacked = (held_adv, run(fp32, held_adv))
    if spec.auto_exclude:
        res = auto_exclude(onnx_path, ranges, spec.quant_target, run, held, ref, spec.min_fidelity,
                           attacked=attacked if spec.robust_exclude else None)
        model, fid, excluded, met = res.model, res.fidelity_db, res.excluded, res.met
        trials = res.trials
    else:
        model = quantize_bytes(onnx_path, ranges, spec.quant_target, exclude=spec.exclude)
        fid = fidelity(run, model, held, ref)
        excluded = [{"node": n, "reason": "excluded by --exclude"} for n in spec.exclude]
        met = fid >= spec.min_fidelity
        trials = [{"excluded": len(spec.exclude), "clean_db": round(fid, 2), "attacked_db": None}]
    adv_fid = fidelity(run, model, *attacked) if attacked else None
    if attacked:
        trials[-1]["attacked_db"] = round(adv_fid, 2)
    info = {"calibration": {**calib.describe(), "method": spec.calib_method, "used": len(cal_imgs),
                            "held_out": len(held), "cache": cinfo, "target": spec.quant_target,
                            "adversarial": adv_info},
            "fidelity_db": fid, "fidelity_met": met, "excluded": excluded, "attacked_fidelity_db": adv_fid,
            "choices": trials}
    if spec.backend is Backend.ORT:
        info["speedup"] = _speedup(fp32, model, held[:1], spec.threads, opts)
    return model, info


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, spec: BuildSpec,
                 progress: Advance = noop) -> BuildReport:
    """Build ``out`` (and ``out.json``) from ``onnx_path`` as ``spec`` says."""
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out)
    model, multiple, names = inspect_onnx(onnx_path)
    src = _Source.of(onnx_path, model, names)
    if spec.backend is Backend.TRT:
        return _build_trt(onnx_path, src, out, spec, multiple, t0, progress)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out} must end in .onnx for the ONNX Runtime backend")
    warnings: list[str] = []
    data, built, info = src.data, Precision.FP32, {}
    if spec.precision in (Precision.INT8, Precision.AUTO):
        q, info = _int8(onnx_path, src, spec, out, progress)
        if not info["fidelity_met"]:
            warnings.append(f"INT8 output is {info['fidelity_db']:.1f} dB from FP32, below --min-fidelity "
                            f"{spec.min_fidelity} dB" + ("" if spec.auto_exclude else "; try --exclude auto"))
        if info.get("speedup") is not None and info["speedup"] < 1.0:
            warnings.append(f"INT8 is slower than FP32 here ({info['speedup']:.2f}x)")
        faster = info.get("speedup") is None or info["speedup"] > 1.0
        use_int8 = spec.precision == Precision.INT8 or (info["fidelity_met"] and faster)
        if use_int8:
            data, built = q, Precision.INT8
        else:
            warnings.append("--precision auto chose FP32 (INT8 missed the fidelity target or was not faster)")
    write_bytes_atomic(out, data)
    size = out.stat().st_size / 2**20
    manifest = Manifest(
        backend=Backend.ORT.manifest_name, backend_version=get_version(), precision=built.value,
        requested_precision=spec.precision.value,
        engine_sha256=src.sha256 if data is src.data else hashlib.sha256(data).hexdigest(),
        source_onnx=str(onnx_path), source_onnx_sha256=src.sha256,
        shape_profile=spec.profile.to_dict() if spec.profile else None, multiple=multiple, inputs=names,
        calibration=info.get("calibration"), excluded_layers=info.get("excluded", []),
        session_options=src.session_options, device=host_device(), build_seconds=time.perf_counter() - t0,
        build_options={"target": spec.quant_target if built == Precision.INT8 else None,
                       "calib_method": spec.calib_method if info else None, "min_fidelity": spec.min_fidelity,
                       "auto_exclude": spec.auto_exclude, "robust_exclude": spec.robust_exclude,
                       "calib_adversarial": spec.calib_adversarial,
                       "macs_per_pixel": float(src.meta.get("udc_edge.macs_per_pixel", 0)) or None},
        summary={k: info[k] for k in ("fidelity_db", "fidelity_met", "speedup", "attacked_fidelity_db", "choices")
                 if k in info} | {"warnings": warnings},
    )
    write_manifest(out, manifest)
    return BuildReport(engine=str(out), backend=Backend.ORT.manifest_name, requested_precision=spec.precision.value,
                       precision=built.value, size_mb=size, seconds=manifest.build_seconds,
                       fidelity_db=info.get("fidelity_db") if built == Precision.INT8 else None,
                       int8_speedup_vs_fp32=info.get("speedup"), excluded=info.get("excluded", []) if built == Precision.INT8 else [],
                       warnings=warnings, calibration=info.get("calibration"),
                       attacked_fidelity_db=info.get("attacked_fidelity_db") if built == Precision.INT8 else None,
                       choices=info.get("choices", []))


def _build_trt(onnx_path: Path, source: _Source, out: Path, spec: BuildSpec, multiple: int, t0: float,
               progress: Advance) -> BuildReport:
    from udc_edge.engines import tensorrt as trt_backend

    trt_backend.require_tensorrt()
    if spec.precision == Precision.AUTO:
        raise UsageError("--precision auto is ONNX Runtime only for now", "build fp16 and int8 and compare with bench")
    profile = spec.profile or DEFAULT_TRT_PROFILE
    info: dict = {}
    plan_src = onnx_path
    with tempfile.TemporaryDirectory(prefix="udc-edge-trt-") as tmp:
        if spec.precision == Precision.INT8:
            q, info = _int8(onnx_path, source, spec, out, progress)
            plan_src = Path(tmp) / "qdq.onnx"
            plan_src.write_bytes(q)
        progress(0, status="building TensorRT engine")
        plan, binfo = trt_backend.build_serialized(plan_src, spec.precision.value, profile.to_dict())
    if spec.precision == Precision.INT8:  # the graph verify's differentiable replica is made from
        qdq_path = out.with_name(out.name + ".qdq.onnx")
        write_bytes_atomic(qdq_path, q)
        binfo = {**binfo, "qdq_onnx": str(qdq_path)}
    write_bytes_atomic(out, plan)
    manifest = Manifest(
        backend=Backend.TRT.manifest_name, backend_version=trt_backend.get_version(), precision=spec.precision.value,
        requested_precision=spec.precision.value, engine_sha256=hashlib.sha256(plan).hexdigest(),
        source_onnx=str(onnx_path), source_onnx_sha256=source.sha256, shape_profile=profile.to_dict(),
        multiple=multiple, inputs=source.names, calibration=info.get("calibration"), excluded_layers=info.get("excluded", []),
        device=binfo.get("device", {}), build_seconds=time.perf_counter() - t0, build_options=binfo,
        summary={k: info[k] for k in ("fidelity_db", "fidelity_met") if k in info},
    )
    write_manifest(out, manifest)
    return BuildReport(engine=str(out), backend=Backend.TRT.manifest_name, requested_precision=spec.precision.value,
                       precision=spec.precision.value, size_mb=out.stat().st_size / 2**20,
                       seconds=manifest.build_seconds, fidelity_db=info.get("fidelity_db"),
                       excluded=info.get("excluded", []), calibration=info.get("calibration"))
