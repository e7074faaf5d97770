"""``udc-edge build``: an ONNX file -> an engine file plus its manifest.

ONNX Runtime: FP32 is the checked ONNX itself; INT8 is a Q/DQ model from real
calibration images (cached ranges, optional automatic exclusion of sensitive layers).
OpenVINO builds go through ``engines.openvino_build``; ``auto`` (backend or precision)
through ``engines.auto``, which builds the candidates and keeps the fastest faithful one. Every
INT8 build measures its output against FP32 (PSNR on held-out calibration images) and its
speed against FP32, and says in the summary and manifest when INT8 is slower or below
target. TensorRT builds go through ``engines.tensorrt`` (explicit quantisation only).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from udc_edge.calibration.qdq import auto_exclude, fidelity, quantize_bytes
from udc_edge.calibration.ranges import cached_ranges
from udc_edge.core.backends import Backend
from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import check_output, work_dir
from udc_edge.core.progress import Advance, noop
from udc_edge.engines.build_source import (
    BuildReport,
    _runner,
    _Source,
    _speedup,
    adversarial_images,
    calibration_images,
    check_calibratable,
    graph_fails,
    inspect_onnx,
    is_qdq,
)
from udc_edge.engines.manifest import Manifest, host_device, write_engine, write_engine_files
from udc_edge.engines.ort import get_version
from udc_edge.engines.spec import DEFAULT_TRT_PROFILE, BuildSpec, Precision


def _int8(onnx_path: Path, src: _Source, spec: BuildSpec, out: Path, progress: Advance) -> tuple[bytes, dict]:
    model, names, opts, fp32 = src.model, src.names, src.session_options, src.data
    if is_qdq(model):  # e.g. a bundle's qdq-*.onnx: quantised already, calibration travelled with it
        return fp32, {
            "calibration": {"source": "pre-quantised Q/DQ model", "target": spec.quant_target},
            "fidelity_met": True,
            "excluded": [],
            "prequantised": True,
        }
    check_calibratable(model, onnx_path)
    calib, cal_imgs, held = calibration_images(model, spec)
    cal_imgs, held_adv, adv_info = adversarial_images(onnx_path, src, spec, cal_imgs, held, progress)
    progress(0, status=f"calibrating ({spec.calib_method}, {len(cal_imgs)} images)")
    cache = spec.calib_cache or str(out.with_name(out.name + ".calib.json"))
    sub = type(calib)(cal_imgs, calib.source + (f" + {spec.calib_adversarial}" if spec.calib_adversarial else ""))
    run = _runner(spec.threads, opts, src.extras)
    try:
        ranges, cinfo = cached_ranges(
            onnx_path,
            sub,
            spec.calib_method,
            symmetric=spec.quant_target == Backend.TRT.qdq_target,
            cache=cache,
            input_names=tuple(names),
            session_options=opts,
            onnx_sha256=src.sha256,
            extras=src.extras,
        )
        ref = run(fp32, held)
    except Exception as exc:  # ONNX Runtime's own Fail types: the graph does not run on these images
        raise graph_fails(onnx_path, cal_imgs, exc) from exc
    progress(0, status="quantising")
    attacked = (held_adv, run(fp32, held_adv)) if held_adv is not None else None
    if spec.auto_exclude:
        res = auto_exclude(
            onnx_path,
            ranges,
            spec.quant_target,
            run,
            held,
            ref,
            spec.min_fidelity,
            attacked=attacked if spec.robust_exclude else None,
        )
        q, fid, excluded, met = res.model, res.fidelity_db, res.excluded, res.met
        trials = res.trials
    else:
        q = quantize_bytes(onnx_path, ranges, spec.quant_target, exclude=spec.exclude)
        fid = fidelity(run, q, held, ref)
        excluded = [{"node": n, "reason": "excluded by --exclude"} for n in spec.exclude]
        met = fid >= spec.min_fidelity
        trials = [{"excluded": len(spec.exclude), "clean_db": round(fid, 2), "attacked_db": None}]
    adv_fid = None
    if attacked:
        adv_fid = fidelity(run, q, *attacked)
        trials[-1]["attacked_db"] = round(adv_fid, 2)
    info = {
        "calibration": {
            **calib.describe(),
            "method": spec.calib_method,
            "used": len(cal_imgs),
            "held_out": len(held),
            "cache": cinfo,
            "target": spec.quant_target,
            "adversarial": adv_info,
        },
        "fidelity_db": fid,
        "fidelity_met": met,
        "excluded": excluded,
        "attacked_fidelity_db": adv_fid,
        "choices": trials,
    }
    if spec.backend is Backend.ORT:
        info["speedup"] = _speedup(fp32, q, held[:1], spec.threads, opts, src.extras)
    return q, info


def build_engine(
    onnx_path: str | os.PathLike,
    out: str | os.PathLike,
    spec: BuildSpec,
    progress: Advance = noop,
    overwrite: bool = False,
    inputs: tuple[str | os.PathLike, ...] = (),
) -> BuildReport:
    """Build ``out`` (and ``out.json``) from ``onnx_path`` as ``spec`` says.

    An existing ``out`` is replaced only with ``overwrite``; the ONNX, the calibration
    images and ``inputs`` (e.g. the bundle it came from) are never written over."""
    t0 = time.perf_counter()
    onnx_path, out = Path(onnx_path), Path(out)
    check_output(out, (onnx_path, spec.calib, spec.calib_cache, *inputs), overwrite, kind="file")
    model, multiple, names = inspect_onnx(onnx_path)
    src = _Source.of(onnx_path, model, names, spec.inputs)
    if spec.backend is Backend.TRT:
        return _build_trt(onnx_path, src, out, spec, multiple, t0, progress)
    if spec.backend == "auto" or spec.precision == Precision.AUTO:
        from udc_edge.engines.auto import build_auto

        return build_auto(onnx_path, out, spec, build_engine, progress, overwrite)
    if spec.backend == "openvino":
        from udc_edge.engines.openvino_build import build_openvino

        return build_openvino(onnx_path, src, out, spec, multiple, t0, progress)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out} must end in .onnx for the ONNX Runtime backend")
    warnings: list[str] = []
    data, built = src.data, Precision.FP32
    info: dict[str, Any] = {}
    if spec.precision == Precision.INT8:
        data, info = _int8(onnx_path, src, spec, out, progress)
        built = Precision.INT8
        if not info["fidelity_met"]:
            warnings.append(
                f"INT8 output is {info['fidelity_db']:.1f} dB from FP32, below --min-fidelity "
                f"{spec.min_fidelity} dB" + ("" if spec.auto_exclude else "; try --exclude auto")
            )
        if info.get("speedup") is not None and info["speedup"] < 1.0:
            warnings.append(f"INT8 is slower than FP32 here ({info['speedup']:.2f}x)")
    size = len(data) / 2**20
    manifest = Manifest(
        backend=Backend.ORT.manifest_name,
        backend_version=get_version(),
        precision=built.value,
        requested_precision=spec.precision.value,
        engine_sha256=src.sha256 if data is src.data else hashlib.sha256(data).hexdigest(),
        source_onnx=str(onnx_path),
        source_onnx_sha256=src.sha256,
        shape_profile=spec.profile.to_dict() if spec.profile else None,
        multiple=multiple,
        inputs=names,
        calibration=info.get("calibration"),
        excluded_layers=info.get("excluded", []),
        session_options=src.session_options,
        device=host_device(),
        build_seconds=time.perf_counter() - t0,
        build_options={
            "target": spec.quant_target if built == Precision.INT8 else None,
            "calib_method": spec.calib_method if info else None,
            "min_fidelity": spec.min_fidelity,
            "calib_size": (info.get("calibration") or {}).get("size"),
            "auto_exclude": spec.auto_exclude,
            "robust_exclude": spec.robust_exclude,
            "calib_adversarial": spec.calib_adversarial,
            "macs_per_pixel": float(src.meta.get("udc_edge.macs_per_pixel", 0)) or None,
        },
        summary={
            k: info[k]
            for k in ("fidelity_db", "fidelity_met", "speedup", "attacked_fidelity_db", "choices")
            if k in info
        }
        | {"warnings": warnings},
        extra_inputs=src.manifest_extras(),
    )
    write_engine(out, data, manifest)
    return BuildReport(
        engine=str(out),
        backend=Backend.ORT.manifest_name,
        requested_precision=spec.precision.value,
        precision=built.value,
        size_mb=size,
        seconds=manifest.build_seconds,
        fidelity_db=info.get("fidelity_db") if built == Precision.INT8 else None,
        int8_speedup_vs_fp32=info.get("speedup"),
        excluded=info.get("excluded", []) if built == Precision.INT8 else [],
        warnings=warnings,
        calibration=info.get("calibration"),
        attacked_fidelity_db=info.get("attacked_fidelity_db") if built == Precision.INT8 else None,
        choices=info.get("choices", []),
    )


def _build_trt(
    onnx_path: Path, source: _Source, out: Path, spec: BuildSpec, multiple: int, t0: float, progress: Advance
) -> BuildReport:
    from udc_edge.engines import tensorrt as trt_backend

    trt_backend.require_tensorrt()
    if spec.precision == Precision.AUTO:
        raise UsageError("--precision auto is ONNX Runtime only for now", "build fp16 and int8 and compare with bench")
    profile = spec.profile or DEFAULT_TRT_PROFILE
    info: dict = {}
    plan_src = onnx_path
    with work_dir("trt") as tmp:
        sidecars: dict[str, Path] = {}
        if spec.precision == Precision.INT8:
            q, info = _int8(onnx_path, source, spec, out, progress)
            plan_src = Path(tmp) / "qdq.onnx"
            plan_src.write_bytes(q)
            sidecars[out.name + ".qdq.onnx"] = plan_src  # the graph verify's differentiable replica is made from
        progress(0, status="building TensorRT engine")
        plan, binfo = trt_backend.build_serialized(plan_src, spec.precision.value, profile.to_dict())
        if sidecars:
            binfo = {**binfo, "qdq_onnx": next(iter(sidecars))}  # a name beside the engine
        manifest = Manifest(
            backend=Backend.TRT.manifest_name,
            backend_version=trt_backend.get_version(),
            precision=spec.precision.value,
            requested_precision=spec.precision.value,
            engine_sha256=hashlib.sha256(plan).hexdigest(),
            files_sha256={n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in sidecars.items()},
            source_onnx=str(onnx_path),
            source_onnx_sha256=source.sha256,
            shape_profile=profile.to_dict(),
            multiple=multiple,
            inputs=source.names,
            calibration=info.get("calibration"),
            excluded_layers=info.get("excluded", []),
            device=binfo.get("device", {}),
            build_seconds=time.perf_counter() - t0,
            build_options=binfo,
            summary={
                k: info[k] for k in ("fidelity_db", "fidelity_met", "attacked_fidelity_db", "choices") if k in info
            },
            extra_inputs=source.manifest_extras(),
        )
        if sidecars:  # engine, Q/DQ sidecar and manifest as one unit
            (Path(tmp) / "plan").write_bytes(plan)
            write_engine_files(out, {out.name: Path(tmp) / "plan", **sidecars}, manifest)
        else:
            write_engine(out, plan, manifest)
    return BuildReport(
        engine=str(out),
        backend=Backend.TRT.manifest_name,
        requested_precision=spec.precision.value,
        precision=spec.precision.value,
        size_mb=out.stat().st_size / 2**20,
        seconds=manifest.build_seconds,
        fidelity_db=info.get("fidelity_db"),
        excluded=info.get("excluded", []),
        calibration=info.get("calibration"),
        attacked_fidelity_db=info.get("attacked_fidelity_db"),
        choices=info.get("choices", []),
    )
