"""CPU engines vs PyTorch eager, side by side in one run: ONNX Runtime FP32/INT8, OpenVINO
FP32/BF16/INT8 (udc-edge builds) and a peer row, plain NNCF (issue goals).

    python benchmarks/engines.py [--model unet-s-poled] [--size 512] [--iters 10] [--quick]

Exports the model (dynamic H/W), builds every engine with ``udc_edge.engines.build``
(calibrated at SIZE px on synthetic P-OLED captures of training photos; INT8 with
``--exclude auto`` and a 42 dB target), and builds the peer here, without udc-edge code:
``nncf.quantize`` with all its defaults on the same ONNX and the same calibration images,
compiled with OpenVINO's default config. Rows are timed in interleaved rounds (every row
once per round, same input, 1 thread each); fidelity (PSNR vs FP32 output) and PSNR vs
ground truth on held-out photos never used in training or calibration. Writes JSON with
the CPU model and ISA flags. Absolute times on shared CPUs are noise; ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def nncf_peer(onnx_path: Path, calib: np.ndarray, threads: int):
    """The peer: plain OpenVINO + NNCF, every option at its default (threads excepted)."""
    os.environ.setdefault("NNCF_CI", "1")  # no telemetry
    import nncf
    import openvino as ov

    core = ov.Core()
    q = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]),
                      subset_size=len(calib))
    compiled = core.compile_model(q, "CPU", {"INFERENCE_NUM_THREADS": threads} if threads else {})
    req = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        req.infer({0: x})
        return np.array(req.get_output_tensor(0).data, copy=True)

    return run, str(compiled.get_property("INFERENCE_PRECISION_HINT").to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-s-poled")
    ap.add_argument("--display", default="poled")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="same for every row (0: each its default)")
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--heldout", type=int, default=8, help="held-out photos for fidelity and ground truth")
    ap.add_argument("--quick", action="store_true", help="256 px, 5 rounds, 8 calibration images, 4 held-out")
    ap.add_argument("--out", default=None,
                    help="JSON path [default: benchmarks/results/engines.json, --quick: engines-quick.json]")
    a = ap.parse_args()
    if a.quick:  # its own file: a quick check never replaces the full run's results
        a.size, a.iters, a.calib_count, a.heldout = 256, 5, 8, 4
    a.out = a.out or f"benchmarks/results/engines{'-quick' if a.quick else ''}.json"

    import torch

    from udc_edge.calibration.dataset import load_calibration_set
    from udc_edge.core.fileio import write_json_atomic
    from udc_edge.core.metrics import psnr
    from udc_edge.engines import load_engine
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.manifest import cpu_facts
    from udc_edge.engines.spec import BuildSpec
    from udc_edge.engines.torch_ref import TorchEngine
    from udc_edge.export.onnx_export import ExportSpec, export_onnx
    from udc_edge.models import count_macs, count_params
    from udc_edge.models.zoo import load_model
    from udc_edge.training.card import heldout_pairs

    t0 = time.perf_counter()
    if a.threads:
        torch.set_num_threads(a.threads)
    model, _ = load_model(a.model)
    calib = {"calib": f"synth:{a.display}", "calib_count": a.calib_count, "calib_size": a.size, "threads": a.threads}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="udc-edge-bench-") as tmp:
        tmp = Path(tmp)
        export_onnx(model, tmp / "m.onnx", ExportSpec(height=256, width=256, parity_images=1))
        specs = {"ort-fp32": ("fp32.onnx", BuildSpec(threads=a.threads)),
                 "ort-int8": ("int8.onnx", BuildSpec(precision="int8", auto_exclude=True, min_fidelity=40.0, **calib)),
                 "openvino-fp32": ("ov32.xml", BuildSpec(backend="openvino", threads=a.threads)),
                 "openvino-bf16": ("ovbf16.xml", BuildSpec(backend="openvino", precision="bf16", threads=a.threads)),
                 "openvino-int8": ("ov8.xml", BuildSpec(backend="openvino", precision="int8", auto_exclude=True,
                                                         min_fidelity=42.0, **calib))}
        for name, (file, spec) in specs.items():
            tb = time.perf_counter()
            rep = build_engine(tmp / "m.onnx", tmp / file, spec)
            rows[name] = {"engine_mb": round(rep.size_mb, 3), "build_s": round(time.perf_counter() - tb, 1),
                          "excluded_layers": len(rep.excluded), "runs_in": rep.inference_precision}
        # the peer: the same calibration images the udc-edge INT8 builds used (their split)
        cal, _ = load_calibration_set(f"synth:{a.display}", a.calib_count, a.size).split(holdout=4)
        tb = time.perf_counter()
        peer, peer_prec = nncf_peer(tmp / "m.onnx", cal, a.threads)
        rows["nncf-peer-int8"] = {"build_s": round(time.perf_counter() - tb, 1), "runs_in": peer_prec}
        engines = {n: load_engine(tmp / f, threads=a.threads).activate() for n, (f, _) in specs.items()}
        fns = {"torch": TorchEngine(model, threads=a.threads).activate(), **engines, "nncf-peer-int8": peer}
        # fidelity vs FP32 output and PSNR vs ground truth on held-out photos
        pairs = heldout_pairs(a.display, count=a.heldout, size=256, seed=4242)
        for lq, gt in pairs:
            x = np.ascontiguousarray(lq.transpose(2, 0, 1)[None])
            ref = fns["ort-fp32"](x)[0].transpose(1, 2, 0)
            for n, f in fns.items():
                y = f(x)[0].transpose(1, 2, 0)
                rows.setdefault(n, {}).setdefault("_fid", []).append(psnr(y, ref))
                rows[n].setdefault("_gt", []).append(psnr(y, gt))
        # latency: interleaved rounds, same input
        x = np.random.default_rng(0).random((1, 3, a.size, a.size), dtype=np.float32)
        for f in fns.values():
            f(x)
            f(x)
        samples: dict[str, list[float]] = {n: [] for n in fns}
        for _ in range(a.iters):
            for n, f in fns.items():
                t = time.perf_counter()
                f(x)
                samples[n].append((time.perf_counter() - t) * 1000)
        for e in engines.values():
            e.deactivate()
    macs = count_macs(model, a.size, a.size)
    p50 = {n: float(np.median(s)) for n, s in samples.items()}
    gt32 = float(np.mean(rows["ort-fp32"]["_gt"]))
    for n, r in rows.items():
        fid, gt = r.pop("_fid"), r.pop("_gt")
        r.update(p50_ms=round(p50[n], 2), speed_vs_torch=round(p50["torch"] / p50[n], 3),
                 gflops=round(2 * macs / (p50[n] / 1000) / 1e9, 1),
                 psnr_vs_fp32_db=round(float(np.mean(fid)), 2), psnr_vs_gt_db=round(float(np.mean(gt)), 3),
                 gt_loss_db=round(gt32 - float(np.mean(gt)), 3))
    best = max(("ort-int8", "openvino-int8"), key=lambda n: rows[n]["speed_vs_torch"])
    result = {
        "what": "torch eager vs ONNX Runtime FP32/INT8, OpenVINO FP32/BF16/INT8 (udc-edge) and plain NNCF "
                "(peer), interleaved rounds, same input",
        "note": "absolute times on shared CPUs are noise; compare ratios measured in this run",
        "model": a.model, "params": count_params(model), "macs": macs,
        "shape": [1, 3, a.size, a.size], "rounds": a.iters, "threads": a.threads or "default",
        "calibration": {"source": f"synth:{a.display}", "count": a.calib_count, "size": a.size,
                        "used": len(cal), "held_out_for_build_checks": a.calib_count - len(cal)},
        "heldout": {"images": len(pairs), "size": 256, "source": "photos:test"},
        "host": {"cpus": os.cpu_count(), **cpu_facts()},
        "rows": {"torch": rows.pop("torch"), **rows},
        "best_int8": best,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    r = result["rows"]
    result["goals"] = {
        "best_int8_at_least_0.95x_nncf_peer": r[best]["speed_vs_torch"] >= 0.95 * r["nncf-peer-int8"]["speed_vs_torch"],
        "best_int8_at_least_3x_ort_int8": r[best]["speed_vs_torch"] >= 3 * r["ort-int8"]["speed_vs_torch"],
        "best_int8_at_least_42db_from_fp32": r[best]["psnr_vs_fp32_db"] >= 42.0,
        "best_int8_loses_at_most_0.2db_vs_gt": r[best]["gt_loss_db"] <= 0.2,
        "ratios": {"best_vs_peer": round(r[best]["speed_vs_torch"] / r["nncf-peer-int8"]["speed_vs_torch"], 3),
                   "best_vs_ort_int8": round(r[best]["speed_vs_torch"] / r["ort-int8"]["speed_vs_torch"], 3)},
    }
    write_json_atomic(a.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
