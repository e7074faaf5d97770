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

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        text = (f"built {self.engine} ({self.backend} {self.precision}"
                + (f", asked {self.requested_precision}" if self.requested_precision != self.precision else "")
                + f", {self.size_mb:.2f} MB) in {self.seconds:.1f} s")
        if self.fidelity_db is not None:
            text += f"; output vs FP32 {self.fidelity_db:.1f} dB PSNR"
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
    runs = []
    for model in (fp32, int8):
        sess = make_session(model, threads=threads, options=options)
        feed = {i.name: (extras or {}).get(i.name, x) for i in sess.get_inputs()}
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


def _int8(onnx_path: Path, src: _Source, spec: BuildSpec, out: Path, progress: Advance) -> tuple[bytes, dict]:
    model, names, opts, fp32 = src.model, src.names, src.session_options, src.data
    if is_qdq(model):  # e.g. a bundle's qdq-*.onnx: quantised already, calibration travelled with it
        return fp32, {"calibration": {"source": "pre-quantised Q/DQ model", "target": spec.quant_target},
                                        "fidelity_met": True, "excluded": [], "prequantised": True}
    hw = [d.dim_value if d.HasField("dim_value") else 0 for d in model.graph.input[0].type.tensor_type.shape.dim][2:]
    calib = load_calibration_set(spec.calib, spec.calib_count, max(hw) if all(hw) else spec.calib_size)
    if all(hw):  # a --fixed-shape graph: calibrate at its own H x W
        calib = type(calib)(np.ascontiguousarray(calib.images[:, :, : hw[0], : hw[1]]), calib.source)
    cal_imgs, held = calib.split(holdout=4)
    progress(0, status=f"calibrating ({spec.calib_method}, {len(cal_imgs)} images)")
    cache = spec.calib_cache or str(out.with_name(out.name + ".calib.json"))
    sub = type(calib)(cal_imgs, calib.source)
    run = _runner(spec.threads, opts, src.extras)
    try:
        ranges, cinfo = cached_ranges(onnx_path, sub, spec.calib_method,
                                      symmetric=spec.quant_target == Backend.TRT.qdq_target, cache=cache,
                                      input_names=tuple(names), session_options=opts, onnx_sha256=src.sha256,
                                      extras=src.extras)
        ref = run(fp32, held)
    except Exception as exc:  # ONNX Runtime's own Fail types: the graph does not run on these images
        from udc_edge.export.onnx_export import short_error

        h, w = cal_imgs.shape[2:]
        raise EngineError(f"{onnx_path} fails on the {h}x{w} calibration images: {short_error(exc)}",
                          "export so the graph runs at that size, or calibrate on images of a size it takes "
                          "(--calib DIR)") from exc
    progress(0, status="quantising")
    if spec.auto_exclude:
        res = auto_exclude(onnx_path, ranges, spec.quant_target, run, held, ref, spec.min_fidelity)
        model, fid, excluded, met = res.model, res.fidelity_db, res.excluded, res.met
    else:
        model = quantize_bytes(onnx_path, ranges, spec.quant_target, exclude=spec.exclude)
        fid = fidelity(run, model, held, ref)
        excluded = [{"node": n, "reason": "excluded by --exclude"} for n in spec.exclude]
        met = fid >= spec.min_fidelity
    info = {"calibration": {**calib.describe(), "method": spec.calib_method, "used": len(cal_imgs),
                            "held_out": len(held), "cache": cinfo, "target": spec.quant_target},
            "fidelity_db": fid, "fidelity_met": met, "excluded": excluded}
    if spec.backend is Backend.ORT:
        info["speedup"] = _speedup(fp32, model, held[:1], spec.threads, opts, src.extras)
    return model, info


def build_engine(onnx_path: str | os.PathLike, out: str | os.PathLike, spec: BuildSpec,
                 progress: Advance = noop) -> BuildReport:
    """Build ``out`` (and ``out.json``) from ``onnx_path`` as ``spec`` says."""
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out)
    model, multiple, names = inspect_onnx(onnx_path)
    src = _Source.of(onnx_path, model, names, spec.inputs)
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
                       "auto_exclude": spec.auto_exclude,
                       "macs_per_pixel": float(src.meta.get("udc_edge.macs_per_pixel", 0)) or None},
        summary={k: info[k] for k in ("fidelity_db", "fidelity_met", "speedup") if k in info} | {"warnings": warnings},
        extra_inputs=src.manifest_extras(),
    )
    write_manifest(out, manifest)
    return BuildReport(engine=str(out), backend=Backend.ORT.manifest_name, requested_precision=spec.precision.value,
                       precision=built.value, size_mb=size, seconds=manifest.build_seconds,
                       fidelity_db=info.get("fidelity_db") if built == Precision.INT8 else None,
                       int8_speedup_vs_fp32=info.get("speedup"), excluded=info.get("excluded", []) if built == Precision.INT8 else [],
                       warnings=warnings, calibration=info.get("calibration"))


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
    write_bytes_atomic(out, plan)
    manifest = Manifest(
        backend=Backend.TRT.manifest_name, backend_version=trt_backend.get_version(), precision=spec.precision.value,
        requested_precision=spec.precision.value, engine_sha256=hashlib.sha256(plan).hexdigest(),
        source_onnx=str(onnx_path), source_onnx_sha256=source.sha256, shape_profile=profile.to_dict(),
        multiple=multiple, inputs=source.names, calibration=info.get("calibration"), excluded_layers=info.get("excluded", []),
        device=binfo.get("device", {}), build_seconds=time.perf_counter() - t0, build_options=binfo,
        summary={k: info[k] for k in ("fidelity_db", "fidelity_met") if k in info},
        extra_inputs=source.manifest_extras(),
    )
    write_manifest(out, manifest)
    return BuildReport(engine=str(out), backend=Backend.TRT.manifest_name, requested_precision=spec.precision.value,
                       precision=spec.precision.value, size_mb=out.stat().st_size / 2**20,
                       seconds=manifest.build_seconds, fidelity_db=info.get("fidelity_db"),
                       excluded=info.get("excluded", []), calibration=info.get("calibration"))
