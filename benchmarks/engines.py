"""ONNX Runtime FP32 / INT8 engines vs PyTorch eager, side by side in one run (issue goals).

    python benchmarks/engines.py [--model unet-s-poled] [--size 512] [--iters 10] [--quick]

Exports the model, builds ORT FP32 and INT8 engines (calibrated on synthetic P-OLED
captures of training photos), times torch eager and both engines in interleaved rounds at
SIZE x SIZE, and measures INT8 fidelity (PSNR vs FP32 output) and its PSNR loss against
ground truth on held-out clean inputs. Writes JSON. Absolute times on shared CPUs are
noise; the ratios are what this reports.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-s-poled")
    ap.add_argument("--display", default="poled")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="same for every backend (0: each its default)")
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="256 px, 5 rounds, 8 calibration images")
    ap.add_argument("--out", default=None,
                    help="JSON path [default: benchmarks/results/engines.json, --quick: engines-quick.json]")
    a = ap.parse_args()
    if a.quick:  # its own file: a quick check never replaces the full run's results
        a.size, a.iters, a.calib_count = 256, 5, 8
    a.out = a.out or f"benchmarks/results/engines{'-quick' if a.quick else ''}.json"

    from udc_edge.core.fileio import write_json_atomic
    from udc_edge.core.metrics import psnr
    from udc_edge.deploy.bench import BenchSpec, run_bench
    from udc_edge.engines import load_engine
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.spec import BuildSpec
    from udc_edge.export.onnx_export import ExportSpec, export_onnx
    from udc_edge.models import count_macs, count_params
    from udc_edge.models.zoo import load_model
    from udc_edge.training.card import heldout_pairs

    t0 = time.perf_counter()
    model, _ = load_model(a.model)
    with tempfile.TemporaryDirectory(prefix="udc-edge-bench-") as tmp:
        tmp = Path(tmp)
        export_onnx(model, tmp / "m.onnx", ExportSpec(height=256, width=256, parity_images=1))
        b32 = build_engine(tmp / "m.onnx", tmp / "fp32.onnx", BuildSpec(threads=a.threads))
        b8 = build_engine(tmp / "m.onnx", tmp / "int8.onnx", BuildSpec(
            precision="int8", calib=f"synth:{a.display}", calib_count=a.calib_count, auto_exclude=True,
            min_fidelity=40.0, threads=a.threads))
        # Fidelity and accuracy on held-out clean inputs (photos never used in training or calibration).
        pairs = heldout_pairs(a.display, count=4, size=256, seed=4242)
        fid, gt32, gt8 = [], [], []
        with load_engine(tmp / "fp32.onnx", a.threads) as e32, load_engine(tmp / "int8.onnx", a.threads) as e8:
            for lq, gt in pairs:
                x = lq.transpose(2, 0, 1)[None].copy()
                y32, y8 = e32(x)[0].transpose(1, 2, 0), e8(x)[0].transpose(1, 2, 0)
                fid.append(psnr(y8, y32))
                gt32.append(psnr(y32, gt))
                gt8.append(psnr(y8, gt))
        rep = run_bench([a.model, str(tmp / "fp32.onnx"), str(tmp / "int8.onnx")],
                        BenchSpec(shape=(1, 3, a.size, a.size), iters=a.iters, warmup=2, threads=a.threads))
    torch_row, fp32_row, int8_row = rep.rows
    p50 = {r.backend + ("-" + r.precision if r.backend != "torch" else ""): r.latency_ms["p50"] for r in rep.rows}
    result = {
        "what": "torch eager vs ONNX Runtime FP32/INT8, interleaved rounds, same input",
        "note": "absolute times on shared CPUs are noise; compare ratios measured in this run",
        "model": a.model, "params": count_params(model), "macs": count_macs(model, a.size, a.size),
        "shape": [1, 3, a.size, a.size], "rounds": rep.spec["iters"], "threads": a.threads or "default",
        "host": {"machine": platform.machine(), "processor": platform.processor(),
                 "conv_peak_gflops": round(rep.host["conv_peak_gflops"], 1)},
        "p50_ms": {k: round(v, 2) for k, v in p50.items()},
        "gflops": {r.backend + "-" + r.precision: round(r.gflops or 0, 2) for r in rep.rows},
        "speedup_vs_torch": {"ort_fp32": round(torch_row.latency_ms["p50"] / fp32_row.latency_ms["p50"], 3),
                             "ort_int8": round(torch_row.latency_ms["p50"] / int8_row.latency_ms["p50"], 3)},
        "engine_mb": {"fp32": round(b32.size_mb, 3), "int8": round(b8.size_mb, 3)},
        "int8": {"fidelity_vs_fp32_db": round(float(np.mean(fid)), 2), "excluded_layers": len(b8.excluded),
                 "psnr_vs_gt_fp32": round(float(np.mean(gt32)), 3), "psnr_vs_gt_int8": round(float(np.mean(gt8)), 3),
                 "psnr_loss_db": round(float(np.mean(gt32) - np.mean(gt8)), 3), "heldout_images": len(pairs)},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    result["goals"] = {
        "ort_fp32_at_least_1.3x_torch": result["speedup_vs_torch"]["ort_fp32"] >= 1.3,
        "ort_int8_at_least_2x_torch": result["speedup_vs_torch"]["ort_int8"] >= 2.0,
        "int8_within_40db_of_fp32": result["int8"]["fidelity_vs_fp32_db"] >= 40.0,
        "int8_loses_at_most_0.2db": result["int8"]["psnr_loss_db"] <= 0.2,
    }
    write_json_atomic(a.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
