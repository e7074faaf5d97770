"""``udc-edge build --backend openvino``: ONNX -> OpenVINO IR (``.xml`` + ``.bin``) + manifest.

* ``fp32``: the ``f32`` precision hint. ``bf16``: the ``bf16`` hint, refused with a clear
  error on a CPU without avx512_bf16/AMX (never a silent FP32); the compiled model's
  reported inference precision is checked and recorded.
* ``int8``: ``nncf.quantize`` (preset ``performance``, fast bias correction) from the same
  real calibration images as the ONNX Runtime path (``build.calibration_images``), with
  activation ranges from the global min/max over the images rather than NNCF's default
  mean of per-image maxima: on the shipped P-OLED UNet the default clipped the highlights
  of held-out photos (34.8 dB vs FP32 on 4 held-out 256 px photos, two images at 22 and 26
  dB; global min-max: 40.8 dB, measured in this change). Layers
  left unquantised run in OpenVINO's default precision (BF16 where the CPU has it, else
  FP32; recorded). ``--exclude auto``: if the output misses ``--min-fidelity``, layers are
  kept in float in the order of ``calibration.qdq.layer_sensitivity`` (one definition of a
  sensitive layer for both CPU backends) via NNCF's ignored scope.

The IR is written to a temporary sibling folder and renamed into place (``.bin`` first,
``.xml`` next, the manifest last): a killed build leaves no engine that loads.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.calibration.qdq import exclude_until, layer_sensitivity, prepare, quantizable_nodes
from udc_edge.core.errors import EngineError, UsageError
from udc_edge.core.fileio import sha256_file, work_dir
from udc_edge.core.metrics import psnr
from udc_edge.core.progress import Advance
from udc_edge.engines import openvino as ovb
from udc_edge.engines.manifest import Manifest, host_device, write_engine_files
from udc_edge.engines.spec import BuildSpec, Precision
from udc_edge.export.onnxrt import image_feed

QUANT_OV_TYPES = ("Convolution", "ConvolutionBackpropData", "GroupConvolution", "MatMul")


def _feeds(names: list[str], x: np.ndarray, extras: dict[str, np.ndarray] | None = None) -> dict:
    """One inference's inputs: the image, fixed-seed noise for a purifier graph's noise input,
    and the build's value of each extra input (a PSF code; ``engines.feeds``)."""
    return image_feed(names, x, np.random.default_rng(0)) | {n: v for n, v in (extras or {}).items() if n in names}


def ov_outputs(model, hint: str | None, threads: int, images: np.ndarray, names: list[str],
               extras: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """Outputs of ``model`` compiled with ``hint`` on each image, and the precision it reports."""
    compiled = ovb.compile_model(model, ovb.compile_config(hint, threads))
    req = compiled.create_infer_request()
    outs = []
    for k in range(len(images)):
        req.infer(_feeds(names, images[k : k + 1], extras))
        outs.append(np.array(req.get_output_tensor(0).data, dtype=np.float32, copy=True))
    return np.concatenate(outs), ovb.inference_precision(compiled)


def mean_psnr(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([psnr(o, r) for o, r in zip(out, ref, strict=True)]))


def ov_op_names(model, onnx_nodes: tuple[str, ...]) -> list[str]:
    """The OpenVINO ops an ONNX node became (``/x/Conv`` -> ``/x/Conv/WithoutBiases``), for NNCF's ignored scope."""
    ops = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANT_OV_TYPES]
    return [o for n in onnx_nodes for o in ops if o == n or o.startswith(n + "/")]


def save_ir(model, folder: Path) -> dict[str, Path]:
    """Save ``model`` as ``m.xml`` + ``m.bin`` in the scratch ``folder``; returns {suffix: path}."""
    ov = ovb.require_openvino()
    ov.save_model(model, str(folder / "m.xml"), compress_to_fp16=False)
    return {".xml": folder / "m.xml", ".bin": folder / "m.bin"}


def nncf_int8(onnx_path: Path, items: list, excluded: tuple[str, ...] = ()):
    """NNCF INT8 of the ONNX at ``onnx_path`` from calibration ``items`` (images, or feed dicts
    for several inputs): global min-max activation ranges, preset performance, fast bias
    correction; ``excluded`` ONNX nodes stay in float."""
    nncf = ovb.require_nncf()
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = ovb.core().read_model(str(onnx_path))
    scope = nncf.IgnoredScope(names=ov_op_names(model, excluded), validate=False)
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's own progress bars: callers have one
        return nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                             subset_size=len(items), fast_bias_correction=True, ignored_scope=scope,
                             advanced_parameters=nncf.AdvancedQuantizationParameters(
                                 activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))


def _int8(onnx_path: Path, src, spec: BuildSpec, hint: str, progress: Advance) -> tuple[object, dict]:
    """NNCF INT8 from the build's calibration images, with the shared sensitivity-based exclusion."""
    from udc_edge.engines.build_source import (
        _runner,
        adversarial_images,
        calibration_images,
        check_calibratable,
    )

    nncf = ovb.require_nncf()
    check_calibratable(src.model, onnx_path)
    calib, cal, held = calibration_images(src.model, spec)
    cal, held_adv, adv_info = adversarial_images(onnx_path, src, spec, cal, held, progress)
    names = src.names
    items = [x if len(names) == 1 else _feeds(names, x, src.extras) for x in (cal[i : i + 1] for i in range(len(cal)))]
    known = set(quantizable_nodes(src.model))
    unknown = sorted(set(spec.exclude) - known)
    if unknown:
        raise UsageError(
            f"--exclude names unknown nodes {unknown[:5]}", f"quantisable nodes look like {sorted(known)[:3]}"
        )
    run = _runner(spec.threads, src.session_options, src.extras)
    ref = run(src.data, held, tuple(names))
    ref_adv = run(src.data, held_adv, tuple(names)) if held_adv is not None else None

    def trial(excluded: tuple[str, ...]):
        progress(0, status=f"NNCF quantising ({len(cal)} images, {len(excluded)} layer(s) kept in float)")
        q = nncf_int8(onnx_path, items, excluded)
        adv = (
            mean_psnr(ov_outputs(q, hint, spec.threads, held_adv, names, src.extras)[0], ref_adv)
            if held_adv is not None and ref_adv is not None
            else None
        )
        return q, mean_psnr(ov_outputs(q, hint, spec.threads, held, names, src.extras)[0], ref), adv

    q, fid, adv = trial(tuple(spec.exclude))
    trials = [
        {
            "excluded": len(spec.exclude),
            "clean_db": round(fid, 2),
            "attacked_db": None if adv is None else round(adv, 2),
        }
    ]
    excluded = [{"node": n, "reason": "excluded by --exclude"} for n in spec.exclude]
    robust = spec.robust_exclude and held_adv is not None
    if spec.auto_exclude and min(fid, adv if robust and adv is not None else fid) < spec.min_fidelity:
        from udc_edge.calibration.ranges import cached_ranges

        progress(0, status="measuring per-layer sensitivity")
        sub = type(calib)(cal, calib.source)
        cache = spec.calib_cache or None
        ranges, _ = cached_ranges(
            onnx_path,
            sub,
            spec.calib_method,
            symmetric=False,
            cache=cache,
            input_names=tuple(names),
            session_options=src.session_options,
            onnx_sha256=src.sha256,
            extras=src.extras,
        )
        attacked = (held_adv, ref_adv) if robust and held_adv is not None and ref_adv is not None else None
        sens = layer_sensitivity(prepare(onnx_path), ranges, "cpu", run, held, ref, attacked)
        res = exclude_until(sens, trial, spec.min_fidelity, trials=trials)
        q, fid, adv, excluded = res.model, res.fidelity_db, res.attacked_db, res.excluded
    info = {
        "calibration": {
            **calib.describe(),
            "method": "nncf (global min-max activation ranges, preset performance, fast bias correction)",
            "used": len(cal),
            "held_out": len(held),
            "adversarial": adv_info,
        },
        "fidelity_db": fid,
        "fidelity_met": min(fid, adv if robust and adv is not None else fid) >= spec.min_fidelity,
        "excluded": excluded,
        "attacked_fidelity_db": adv,
        "choices": trials,
        "nncf": {
            "version": nncf.__version__,
            "preset": "performance",
            "fast_bias_correction": True,
            "activation_ranges": "global min-max",
            "subset_size": len(items),
            "ignored_scope": [e["node"] for e in excluded],
        },
    }
    return q, info


def build_openvino(
    onnx_path: Path, src, out: Path, spec: BuildSpec, multiple: int, t0: float, progress: Advance
) -> Any:  # build.BuildReport (build imports this module)
    """Build an OpenVINO IR engine; returns the ``BuildReport``."""
    from udc_edge.engines.build_source import BuildReport

    ovb.require_openvino()
    if out.suffix != ".xml":
        raise UsageError(f"--out {out} must end in .xml for the OpenVINO backend (the .bin is written beside it)")
    if spec.prequantised:
        raise UsageError(
            "--backend openvino builds INT8 from the float ONNX with NNCF, not from a Q/DQ model",
            "give the float ONNX (a bundle's model.onnx) with --calib",
        )
    prec = spec.precision
    bf16 = ovb.supports_bf16()
    if prec == Precision.BF16 and not bf16:
        cpu = ovb.cpu_facts()["cpu_model"]
        raise EngineError(
            f"--precision bf16: this CPU ({cpu}) has no avx512_bf16 or AMX, so OpenVINO would silently run FP32",
            "use --precision fp32, int8 or auto",
        )
    hint = "f32" if prec == Precision.FP32 else "bf16" if (prec == Precision.BF16 or bf16) else "f32"
    warnings: list[str] = []
    info: dict = {}
    progress(0, status=f"reading {onnx_path.name} into OpenVINO")
    try:
        model = ovb.core().read_model(str(onnx_path))
    except RuntimeError as exc:
        raise EngineError(
            f"OpenVINO cannot read {onnx_path}: {str(exc).splitlines()[0][:300]}", "re-export it with udc-edge export"
        ) from exc
    if prec == Precision.INT8:
        model, info = _int8(onnx_path, src, spec, hint, progress)
        if not info["fidelity_met"]:
            warnings.append(
                f"INT8 output is {info['fidelity_db']:.1f} dB from FP32, below --min-fidelity "
                f"{spec.min_fidelity} dB" + ("" if spec.auto_exclude else "; try --exclude auto")
            )
    compiled = ovb.compile_model(model, ovb.compile_config(hint, spec.threads))
    really = ovb.inference_precision(compiled)
    del compiled
    if prec == Precision.BF16 and really != "bf16":
        raise EngineError(
            f"--precision bf16: OpenVINO compiled the model in {really}, not bf16", "use --precision fp32 or int8"
        )
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist", "create it first")
    with work_dir("openvino") as scratch:
        saved = save_ir(model, scratch)
        bin_name = out.with_suffix(".bin").name
        shas = {out.name: sha256_file(saved[".xml"]), bin_name: sha256_file(saved[".bin"])}
        manifest = Manifest(
            backend="openvino",
            backend_version=ovb.get_version(),
            precision=prec.value,
            requested_precision=spec.precision.value,
            engine_sha256=shas[out.name],
            files_sha256={bin_name: shas[bin_name]},
            source_onnx=str(onnx_path),
            source_onnx_sha256=src.sha256,
            shape_profile=spec.profile.to_dict() if spec.profile else None,
            multiple=multiple,
            inputs=src.names,
            calibration=info.get("calibration"),
            excluded_layers=info.get("excluded", []),
            session_options={"INFERENCE_PRECISION_HINT": hint},
            device={**host_device(), "inference_precision": really},
            build_seconds=time.perf_counter() - t0,
            build_options={
                "openvino": ovb.get_version(),
                "nncf": info.get("nncf"),
                "hint": hint,
                "threads": spec.threads,
                "min_fidelity": spec.min_fidelity,
                "auto_exclude": spec.auto_exclude,
                "robust_exclude": spec.robust_exclude,
                "calib_adversarial": spec.calib_adversarial,
                "calib_size": (info.get("calibration") or {}).get("size"),
                "macs_per_pixel": float(src.meta.get("udc_edge.macs_per_pixel", 0)) or None,
            },
            summary={
                k: info[k] for k in ("fidelity_db", "fidelity_met", "attacked_fidelity_db", "choices") if k in info
            }
            | {"inference_precision": really, "warnings": warnings},
            extra_inputs=src.manifest_extras(),
        )
        write_engine_files(out, {out.name: saved[".xml"], bin_name: saved[".bin"]}, manifest)
    size = sum((out.parent / n).stat().st_size for n in shas) / 2**20
    return BuildReport(
        engine=str(out),
        backend="openvino",
        requested_precision=spec.precision.value,
        precision=prec.value,
        size_mb=size,
        seconds=manifest.build_seconds,
        fidelity_db=info.get("fidelity_db"),
        excluded=info.get("excluded", []),
        warnings=warnings,
        calibration=info.get("calibration"),
        inference_precision=really,
        attacked_fidelity_db=info.get("attacked_fidelity_db"),
        choices=info.get("choices", []),
    )
