"""``--precision auto`` and ``--backend auto``: build the candidates, measure each one here,
keep the fastest whose output stays within ``--min-fidelity`` dB of FP32.

Candidates: ONNX Runtime FP32 / INT8 and OpenVINO FP32 / BF16 (CPUs with it) / INT8, as
the backend and precision asked allow. Each is built for real into a temporary sibling
folder, then measured on the build's held-out calibration images: fidelity = mean PSNR
of its output vs ONNX Runtime FP32 output of the source ONNX; speed = median latency in
interleaved rounds (every candidate once per round, same input, ``--threads``). The
winner's files are renamed into place; its manifest and the command's output list every
candidate, its speed and fidelity, and why the winner won.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.core.errors import BackendUnavailableError, EngineError, UsageError
from udc_edge.core.fileio import check_output, work_dir, write_bytes_atomic
from udc_edge.core.progress import Advance, noop
from udc_edge.core.timing import median_ms
from udc_edge.engines.manifest import read_manifest, write_engine_files
from udc_edge.engines.spec import BuildSpec, Precision

SUFFIX = {"ort": ".onnx", "openvino": ".xml"}
BACKEND_NAME = {"ort": "onnxruntime", "openvino": "openvino"}


def candidate_plan(spec: BuildSpec) -> tuple[list[tuple[str, Precision]], list[dict]]:
    """(backend, precision) pairs to build, and the ones skipped with the reason."""
    from udc_edge.engines import openvino as ovb

    backends = ("ort", "openvino") if spec.backend == "auto" else (spec.backend,)
    precs = (Precision.FP32, Precision.BF16, Precision.INT8) if spec.precision == Precision.AUTO else (spec.precision,)
    plan: list[tuple[str, Precision]] = []
    skipped: list[dict] = []
    for b in backends:
        if b == "openvino" and not ovb.is_available():
            if spec.backend == "openvino":
                ovb.require_openvino()  # raises, naming the extra
            skipped.append({"name": "openvino", "verdict": f"skipped: OpenVINO is not installed ({ovb.EXTRA_HINT})"})
            continue
        for p in precs:
            if p == Precision.BF16 and b == "ort":
                continue
            if p == Precision.FP16:
                continue
            if p == Precision.BF16 and not ovb.supports_bf16():
                skipped.append({"name": f"{b}-bf16", "verdict": "skipped: this CPU has no avx512_bf16 or AMX"})
                continue
            plan.append((b, p))
    return plan, skipped


def choose(cands: list[dict], min_fidelity: float) -> tuple[int, str]:
    """Index of the fastest candidate with ``fidelity_db >= min_fidelity`` and the reason;
    sets each candidate's ``verdict``. A candidate without a fidelity (not measured) never wins."""
    ok = [i for i, c in enumerate(cands) if c.get("fidelity_db") is not None and c["fidelity_db"] >= min_fidelity]
    if not ok:
        raise EngineError(f"no candidate's output is within --min-fidelity {min_fidelity} dB of FP32 "
                          f"({', '.join(c['name'] for c in cands)})", "lower --min-fidelity or build fp32")
    win = min(ok, key=lambda i: cands[i]["ms"])
    for i, c in enumerate(cands):
        if i == win:
            c["verdict"] = "chosen"
        elif i not in ok:
            c["verdict"] = f"rejected: {c['fidelity_db']:.1f} dB < {min_fidelity} dB"
        else:
            c["verdict"] = f"slower ({c['ms'] / cands[win]['ms']:.2f}x the winner's time)"
    faster = [c["name"] for i, c in enumerate(cands) if i not in ok and c["ms"] < cands[win]["ms"]]
    w = cands[win]
    reason = (f"{w['name']}: the fastest ({w['ms']:.2f} ms) of the candidates within {min_fidelity} dB of FP32 "
              f"({w['fidelity_db']:.1f} dB)" + (f"; faster but unfaithful: {', '.join(faster)}" if faster else ""))
    return win, reason


def _measure(paths: list[Path], images: np.ndarray, reference: np.ndarray, threads: int, rounds: int = 3,
             runs: int = 3) -> list[tuple[float, float]]:
    """(median ms, fidelity dB) of each engine: outputs on every image, timing interleaved."""
    from udc_edge.engines import load_engine
    from udc_edge.engines.openvino_build import mean_psnr

    engines = [load_engine(p, threads=threads).activate() for p in paths]
    try:
        fids = [mean_psnr(np.concatenate([e(*[images[k : k + 1]] * e.num_inputs) for k in range(len(images))]),
                          reference) for e in engines]
        x = images[:1]
        times: list[list[float]] = [[] for _ in engines]
        for _ in range(rounds):
            for e, t in zip(engines, times, strict=True):
                t.append(median_ms(lambda e=e: e(*[x] * e.num_inputs), runs))  # type: ignore[misc]  # default-bound lambda
    finally:
        for e in engines:
            e.deactivate()
    return [(float(np.median(t)), f) for t, f in zip(times, fids, strict=True)]


def build_auto(onnx_path: Path, out: Path, spec: BuildSpec, build_engine: Callable, progress: Advance = noop,
               overwrite: bool = False) -> Any:  # build.BuildReport (build imports this module)
    """Build every candidate, measure, keep the winner at ``out`` (``--backend auto``: its suffix
    becomes the winner's, ``.onnx`` or ``.xml``). ``build_engine`` builds one candidate (passed in:
    ``build`` sits above this module). Returns the winner's ``BuildReport``."""
    from udc_edge.engines.build_source import _runner, _Source, calibration_images, inspect_onnx

    t0 = time.perf_counter()
    if spec.backend in SUFFIX and out.suffix != SUFFIX[spec.backend]:
        raise UsageError(f"--out {out} must end in {SUFFIX[spec.backend]} for --backend {spec.backend}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist", "create it first")
    plan, skipped = candidate_plan(spec)
    model, _, names = inspect_onnx(onnx_path)
    src = _Source.of(onnx_path, model, names)
    _, _, held = calibration_images(model, spec)
    reference = _runner(spec.threads, src.session_options)(src.data, held, tuple(names))
    with work_dir("auto") as tmp:
        cache = spec.calib_cache or str(tmp / "calib.json")
        built, reports = [], []
        cands: list[dict[str, Any]] = []
        for b, p in plan:
            name = f"{b}-{p.value}"
            progress(0, status=f"auto: building {name}")
            path = tmp / f"{name}{SUFFIX[b]}"
            try:
                rep = build_engine(onnx_path, path, replace(spec, backend=b, precision=p, calib_cache=cache), progress)
            except (BackendUnavailableError, EngineError) as exc:
                skipped.append({"name": name, "verdict": f"skipped: {exc.message}"})
                continue
            built.append(path)
            reports.append(rep)
            cands.append({"name": name, "backend": BACKEND_NAME[b], "precision": p.value, "suffix": SUFFIX[b]})
        progress(0, status=f"auto: measuring {len(built)} candidates")
        for c, (ms, fid) in zip(cands, _measure(built, held, reference, spec.threads), strict=False):
            c["ms"], c["fidelity_db"] = round(ms, 3), round(fid, 2)
        win, reason = choose(cands, spec.min_fidelity)
        final = out if spec.backend in SUFFIX else out.with_suffix(cands[win]["suffix"])
        if final != out:  # --backend auto: the winner's suffix; that file must be free too
            check_output(final, (onnx_path, spec.calib, spec.calib_cache), overwrite, kind="file")
        manifest = read_manifest(built[win])
        sources = {final.name: built[win]} | {final.stem + Path(n).suffix: built[win].with_name(n)
                                              for n in manifest.files_sha256}
        manifest.files_sha256 = {final.stem + Path(n).suffix: s for n, s in manifest.files_sha256.items()}
        manifest.requested_precision = spec.precision.value
        manifest.build_options = {**manifest.build_options, "requested_backend": spec.backend}
        manifest.summary = {**manifest.summary, "auto": {"candidates": cands, "skipped": skipped, "choice": reason,
                                                          "min_fidelity": spec.min_fidelity,
                                                          "measured_on": f"{len(held)} held-out calibration images, "
                                                                         f"{held.shape[2]}x{held.shape[3]}"}}
        manifest.build_seconds = time.perf_counter() - t0
        write_engine_files(final, sources, manifest)
        if not spec.calib_cache and Path(cache).is_file():
            write_bytes_atomic(final.with_name(final.name + ".calib.json"), Path(cache).read_bytes())
    rep = reports[win]
    rep.engine, rep.requested_precision, rep.seconds = str(final), spec.precision.value, manifest.build_seconds
    rep.candidates, rep.choice = cands + skipped, reason
    return rep
