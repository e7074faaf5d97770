"""Latency of the restorer and of every shipped purifier setting in torch on a CUDA GPU.

    python benchmarks/gpu_latency.py [--size 256]    # writes benchmarks/results/gpu-latency-256.json

Measures torch eager on the GPU (what a user gets before building an engine), FP32 and FP16
(autocast), batch 1, one fixed noise tensor; each call ends with ``torch.cuda.synchronize``
so the time covers the work, not the launch. All rows are measured side by side in one run,
so the ratios (students and one-shot settings over the 50-step teacher) are the claim; the
absolute numbers hold for this GPU only. Needs torch with CUDA; TensorRT is not used.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import torch

from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.timing import median_ms
from udc_edge.diffusion.purifier import Purifier, load_purifier
from udc_edge.models.zoo import load_model

PURIFIERS = ("purifier-poled", "purifier-poled-k1", "purifier-poled-k2", "purifier-poled-oneshot",
             "purifier-poled-m-oneshot", "purifier-poled-l-oneshot")


def timed(fn, runs: int, dev: torch.device) -> float:
    def call():
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return median_ms(call, runs, warmup=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--restorer", default="unet-s-poled")
    ap.add_argument("--purifier", action="append", help="purifiers to time (default: every shipped one)")
    ap.add_argument("--device", default="cuda", help="cuda (the point), or cpu for a dry run of the script")
    ap.add_argument("--out", default="", help="default: benchmarks/results/gpu-latency-SIZE.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_latency.py needs torch with a CUDA GPU (torch.cuda.is_available() is False)")
    t0 = time.perf_counter()
    x = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(dev)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dev)
    models = {args.restorer: (load_model(args.restorer)[0], lambda m: m(x))}
    for name in args.purifier or PURIFIERS:
        models[name] = (load_purifier(name)[0], lambda m: m(x, noise))
    rows = {}
    for name, (model, call) in models.items():
        model = model.to(dev).eval()
        row = {}
        with torch.no_grad():
            run = functools.partial(call, model)
            row["fp32_ms"] = timed(run, args.runs, dev)
            with torch.autocast(dev.type, dtype=torch.float16 if dev.type == "cuda" else torch.bfloat16):
                row["autocast_ms"] = timed(run, args.runs, dev)
            row["autocast_dtype"] = "float16" if dev.type == "cuda" else "bfloat16"
        if isinstance(model, Purifier):
            row["setting"] = {k: model.config()[k] for k in ("t_star", "steps", "average")}
        rows[name] = row
        print(f"{name:28s} fp32 {row['fp32_ms']:8.2f} ms   autocast {row['autocast_ms']:8.2f} ms", flush=True)
    teacher = rows.get("purifier-poled")
    if teacher:
        for name, row in rows.items():
            if name.startswith("purifier") and name != "purifier-poled":
                row["fp32_ratio_over_teacher"] = row["fp32_ms"] / teacher["fp32_ms"]
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"none (CPU dry run, {platform.machine()})"
    result = {"benchmark": "gpu_latency", "gpu": gpu, "torch": torch.__version__,
              "python": platform.python_version(), "size": args.size, "runs": args.runs, "batch": 1,
              "notes": "torch eager on the GPU, median of runs after 3 warm-ups, synchronised; "
                       "ratios are the claim, absolute times hold for this GPU only",
              "rows": rows, "seconds": time.perf_counter() - t0}
    write_json_atomic(args.out or f"benchmarks/results/gpu-latency-{args.size}.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
