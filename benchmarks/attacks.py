"""Attack cost benchmark: PGD-20 (white-box, torch) and SimBA-1000 (black-box) in ONE run.

On one 256x256 synthetic P-OLED image (a held-out ``photos:test`` crop) and the shipped
restorer ``unet-s-poled`` (a freshly initialised unet-s when its weights are not
installed, noted in the JSON) it measures, on this CPU:

- PGD-20 at 8/255 on the torch model: seconds, seconds per gradient pass, PSNR drop;
- SimBA-1000 at 8/255 on the ONNX Runtime engine of the same model (the deployed,
  gradient-free case; ``--simba-target torch`` to query the torch model instead):
  seconds, queries, milliseconds per query, PSNR drop;
- the ratios that survive a noisy machine: SimBA/PGD time, and the cost of one query
  relative to one gradient pass.

    python benchmarks/attacks.py [--out benchmarks/results/attacks.json]

Writes JSON (and prints it). The default run takes about 1-2 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from udc_edge.attacks import AttackSpec, attack
from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.metrics import psnr
from udc_edge.data.sources import make_source
from udc_edge.data.synth import UDCSimulator, image_rng
from udc_edge.evaluation.robustness import Padded, forward
from udc_edge.models import create
from udc_edge.models.zoo import load_model, shipped_models

SHIPPED = "unet-s-poled"
NOISE_NOTE = ("absolute times on a shared CPU are noise (other jobs, frequency scaling, thread "
              "contention): compare the ratios measured in this one run, not seconds across runs")


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=SHIPPED, help="shipped name or checkpoint (default: unet-s-poled)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--simba-iterations", type=int, default=1000)
    ap.add_argument("--simba-target", choices=("ort", "torch"), default="ort")
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return ap.parse_args()


def _model(name: str) -> tuple[torch.nn.Module, dict]:
    if name != SHIPPED or SHIPPED in shipped_models():
        model, info = load_model(name)
        return model, {"name": name, "source": info.get("source"), "arch": info.get("arch")}
    torch.manual_seed(0)
    return create("unet-s").eval(), {
        "name": "unet-s (untrained)", "source": "fresh",
        "note": f"{SHIPPED} weights are not installed in udc_edge/weights/: timed a freshly initialised "
                "unet-s of the same architecture; its PSNR numbers mean nothing, its times do"}


def _image(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    sim = UDCSimulator.for_display("poled")
    sample, _ = make_source("photos:test")
    rng = image_rng(seed, 0)
    return sim.simulate(sample(size, rng), rng)


def _ort_engine(model: torch.nn.Module, size: int, threads: int, tmp: Path):
    from udc_edge.engines.ort import OrtEngine

    path = tmp / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.rand(1, 3, size, size), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}})
    return OrtEngine(path, threads=threads, multiple=getattr(model, "multiple", 1)).activate()


def _run(target, spec: AttackSpec, lq: np.ndarray, gt: np.ndarray) -> dict:
    x, y = lq.transpose(2, 0, 1)[None].copy(), gt.transpose(2, 0, 1)[None].copy()
    res = attack(target, x, y, spec)
    adv = res.x_adv[0].transpose(1, 2, 0)
    clean, attacked = psnr(forward(target, lq), gt), psnr(forward(target, adv), gt)
    queries = int(res.queries[0])
    return {"attack": spec.name, "eps": spec.eps, "seconds": res.seconds, "queries": queries,
            "ms_per_query": 1000 * res.seconds / max(queries, 1), "psnr_clean": clean,
            "psnr_attacked": attacked, "psnr_drop": clean - attacked, "linf": float(res.linf[0])}


def main() -> dict:
    args = _args()
    torch.set_num_threads(args.threads)
    model, info = _model(args.model)
    lq, gt = _image(args.size, args.seed)
    t0 = time.perf_counter()
    pgd = _run(Padded(model).eval(), AttackSpec("pgd", eps=args.eps, steps=args.pgd_steps, seed=args.seed), lq, gt)
    pgd["note"] = "queries are gradient passes (forward + backward)"
    with tempfile.TemporaryDirectory() as tmp:
        target = _ort_engine(model, args.size, args.threads, Path(tmp)) if args.simba_target == "ort" \
            else Padded(model).eval()
        simba_spec = AttackSpec("simba", eps=args.eps, simba_iterations=args.simba_iterations, seed=args.seed)
        simba = _run(target, simba_spec, lq, gt)
    simba.update(target=args.simba_target, note="queries are forward passes of the target, no gradients")
    result = {
        "benchmark": "attacks",
        "note": NOISE_NOTE,
        "model": info,
        "image": {"size": [args.size, args.size], "source": "photos:test", "display": "poled", "seed": args.seed},
        "pgd": pgd,
        "simba": simba,
        "ratios": {
            "simba_over_pgd_seconds": simba["seconds"] / pgd["seconds"],
            "query_over_gradient_pass": simba["ms_per_query"] / pgd["ms_per_query"],
            "simba_queries_over_pgd_passes": simba["queries"] / max(pgd["queries"], 1),
        },
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "seconds_total": time.perf_counter() - t0,
        "command": " ".join(["python", *sys.argv]),
    }
    if args.simba_target == "ort":
        import onnxruntime

        result["machine"]["onnxruntime"] = onnxruntime.__version__
    if args.out:
        write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
