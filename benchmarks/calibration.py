"""INT8 calibration methods side by side: percentile, minmax and entropy on one model.

    python benchmarks/calibration.py [--model unet-s-poled] [--size 256]

Exports the model once, builds an ONNX Runtime FP32 engine and one INT8 engine per
calibration method (every conv in INT8: no auto-exclusion), calibrated on synthetic
captures of training photos, and measures each INT8 output's PSNR against the FP32 output
and against ground truth on held-out inputs. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def nchw(img: np.ndarray) -> np.ndarray:
    """An HxWx3 image as the 1x3xHxW float32 array engines take."""
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet-s-poled")
    ap.add_argument("--display", default="poled")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--methods", default="percentile,minmax,entropy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/calibration.json")
    a = ap.parse_args()

    from udc_edge.core.fileio import write_json_atomic
    from udc_edge.core.metrics import psnr
    from udc_edge.data.images import to_hwc
    from udc_edge.engines import load_engine
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.spec import BuildSpec
    from udc_edge.export.onnx_export import ExportSpec, export_onnx
    from udc_edge.models.zoo import load_model
    from udc_edge.training.card import heldout_pairs

    t0 = time.perf_counter()
    model, _ = load_model(a.model)
    pairs = heldout_pairs(a.display, count=4, size=a.size, seed=4242)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="udc-edge-calib-") as tmp:
        tmp = Path(tmp)
        export_onnx(model, tmp / "m.onnx", ExportSpec(height=a.size, width=a.size, parity_images=1))
        build_engine(tmp / "m.onnx", tmp / "fp32.onnx", BuildSpec(threads=a.threads))
        with load_engine(tmp / "fp32.onnx", a.threads) as e32:
            ref = [to_hwc(e32(nchw(lq))) for lq, _ in pairs]
        for method in a.methods.split(","):
            out = tmp / f"int8-{method}.onnx"
            build_engine(tmp / "m.onnx", out, BuildSpec(precision="int8", calib=f"synth:{a.display}",
                                                        calib_count=a.calib_count, calib_method=method,
                                                        threads=a.threads))
            with load_engine(out, a.threads) as e8:
                y8 = [to_hwc(e8(nchw(lq))) for lq, _ in pairs]
            rows[method] = {
                "psnr_vs_fp32_db": float(np.mean([psnr(y, r) for y, r in zip(y8, ref, strict=True)])),
                "psnr_vs_gt_db": float(np.mean([psnr(y, gt) for y, (_, gt) in zip(y8, pairs, strict=True)])),
            }
            print(method, rows[method], flush=True)
    result = {"what": "INT8 calibration methods, every conv INT8, ONNX Runtime (cpu target)",
              "model": a.model, "size": a.size, "heldout_images": len(pairs), "calib_count": a.calib_count,
              "fp32_psnr_vs_gt_db": float(np.mean([psnr(r, gt) for r, (_, gt) in zip(ref, pairs, strict=True)])),
              "methods": rows, "seconds": time.perf_counter() - t0}
    write_json_atomic(a.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
