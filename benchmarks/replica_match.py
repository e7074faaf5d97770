"""Per-image PSNR (and differing pixels) of a differentiable replica against its engine.

    python benchmarks/replica_match.py --data heldout --limit 4 int8.onnx int8-adv.onnx

What ``verify`` pools into its "replica match" row, image by image (docs/verify.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from udc_edge.core.metrics import psnr
from udc_edge.data.readers import open_paired_dataset
from udc_edge.engines import load_engine
from udc_edge.engines.replica import OnnxReplica
from udc_edge.evaluation.robustness import as_target, forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("engines", nargs="+")
    ap.add_argument("--data", required=True)
    ap.add_argument("--limit", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = open_paired_dataset(args.data)
    for path in args.engines:
        eng = load_engine(path, threads=1).activate()
        rep = as_target(OnnxReplica.from_file(path, multiple=eng.manifest.multiple).eval())
        rows = []
        for i in range(min(args.limit, len(ds))):
            e, r = forward(eng, ds[i].lq), forward(rep, ds[i].lq)
            rows.append((round(psnr(r, e), 1), int((np.abs(r - e) > 1e-4).sum())))
        print(path, "(PSNR dB, differing values) per image:", rows)


if __name__ == "__main__":
    main()
