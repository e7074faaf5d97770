"""Doctor's speed advice over every CPU engine udc-edge builds here: ONNX Runtime FP32/INT8
and, when openvino (and nncf) are installed, OpenVINO FP32, BF16 (on CPUs that run it
natively) and NNCF INT8, the way ``build --backend openvino`` makes them. All are timed in
interleaved rounds on one image, and the fastest whose output stays within
``--min-fidelity`` of FP32 is named; a backend it cannot measure is named with the reason."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from udc_edge.doctor.report import DoctorReport, DoctorSpec

Feed = Callable[[np.ndarray], dict[str, np.ndarray]]


def openvino_candidates(onnx_path: Path, cal: np.ndarray, held: np.ndarray, ref: np.ndarray, feed: Feed,
                        n_inputs: int, threads: int) -> tuple[dict[str, tuple[Callable[[], object], float]], list[str]]:
    """``({name: (one timed call on held[0], PSNR vs ref dB)}, [what was not measured and why])``."""
    if importlib.util.find_spec("openvino") is None:
        return {}, ["OpenVINO: not installed (pip install 'udc-edge[cpu]' brings openvino and nncf)"]
    from udc_edge.engines import openvino as ovb
    from udc_edge.engines.openvino_build import mean_psnr, nncf_int8
    from udc_edge.export.onnx_export import short_error

    out: dict[str, tuple[Callable[[], object], float]] = {}
    notes: list[str] = []
    bf16 = ovb.supports_bf16()
    plans: list[tuple[str, Callable[[], object], str]] = [
        ("OpenVINO FP32", lambda: ovb.core().read_model(str(onnx_path)), "f32")]
    if bf16:
        plans.append(("OpenVINO BF16", lambda: ovb.core().read_model(str(onnx_path)), "bf16"))
    else:
        notes.append("OpenVINO BF16: this CPU has no avx512_bf16 or AMX")
    if importlib.util.find_spec("nncf") is not None:
        items = [x if n_inputs == 1 else feed(x) for x in (cal[i : i + 1] for i in range(len(cal)))]
        plans.append(("OpenVINO INT8", lambda: nncf_int8(onnx_path, items), "bf16" if bf16 else "f32"))
    else:
        notes.append("OpenVINO INT8: nncf is not installed")
    for name, make, hint in plans:
        try:
            compiled = ovb.compile_model(make(), ovb.compile_config(hint, threads))
            if hint == "bf16" and name.endswith("BF16") and ovb.inference_precision(compiled) != "bf16":
                notes.append(f"{name}: OpenVINO compiled it in {ovb.inference_precision(compiled)}, not bf16")
                continue
            req = compiled.create_infer_request()
            outs = []
            for k in range(len(held)):
                req.infer(feed(held[k : k + 1]))
                outs.append(np.array(req.get_output_tensor(0).data, dtype=np.float32, copy=True))
            one = feed(held[:1])
            out[name] = (lambda req=req, one=one: req.infer(one), mean_psnr(np.concatenate(outs), ref))
        except Exception as exc:  # noqa: BLE001 (a backend that fails here is reported, not fatal)
            notes.append(f"{name}: {short_error(exc)}")
    return out, notes


def speed_advice(report: DoctorReport, engines: dict[str, tuple[float, float | None]], spec: DoctorSpec,
                 not_measured: list[str]) -> None:
    """The fastest engine whose output is within ``min_fidelity`` of FP32 (FP32 itself: None)."""
    faithful = {k: ms for k, (ms, fid) in engines.items() if fid is None or fid >= spec.min_fidelity}
    best = min(faithful, key=lambda k: faithful[k])
    rows = {k: {"ms": ms, "fidelity_db": fid, "faithful": k in faithful} for k, (ms, fid) in engines.items()}
    report.speed = {"engines": rows, "fastest": f"{best} ({faithful[best]:.2f} ms, measured side by side)",
                    "not_measured": not_measured}
