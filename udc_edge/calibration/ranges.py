"""Activation ranges from a calibration set, and their reusable JSON cache.

Methods (ONNX Runtime's calibrators): ``percentile`` (99.999 % of a 2048-bin histogram,
the default), ``minmax``, and ``entropy`` (KL divergence on a real 2048-bin histogram; ORT's
128-bin default collapses to min-max). ``python benchmarks/calibration.py`` on the shipped
P-OLED UNet (4 held-out 256 px images, every conv INT8; benchmarks/results/calibration.json):
percentile 41.9 dB from FP32, minmax 41.1 dB, entropy 25.9 dB. KL thresholds were designed
for classifiers and clip the highlights a restorer must keep. Ranges are cached as JSON
keyed by the ONNX file's sha256, the method and its options, and the calibration set's hash; a cache
that matches is reused, so requantising gives the identical model without recalibrating.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from udc_edge.calibration.dataset import CalibrationSet
from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import sha256_file, work_dir, write_json_atomic
from udc_edge.export.onnxrt import image_feed

METHODS = ("minmax", "entropy", "percentile")
CACHE_FORMAT = "udc-edge-calib/1"
NUM_BINS = 2048
PERCENTILE = 99.999


def _key(onnx_sha: str, method: str, calib_sha: str, symmetric: bool) -> dict:
    return {"onnx_sha256": onnx_sha, "method": method, "calib_sha256": calib_sha, "symmetric": symmetric,
            "num_bins": NUM_BINS if method != "minmax" else None,
            "percentile": PERCENTILE if method == "percentile" else None}


def compute_ranges(onnx_path: str | os.PathLike, calib: np.ndarray, method: str = "percentile",
                   op_types: tuple[str, ...] = ("Conv", "ConvTranspose", "MatMul", "Gemm"),
                   symmetric: bool = False, input_names: tuple[str, ...] = ("input",),
                   session_options: dict | None = None) -> dict[str, list[float]]:
    """Run the calibrator over ``calib`` (N x 3 x H x W) and return {tensor: [lo, hi]}.
    ``session_options``: what export recorded the graph needs (None: read them from it)."""
    from onnxruntime.quantization.calibrate import (
        CalibrationDataReader,
        CalibrationMethod,
        create_calibrator,
    )

    if method not in METHODS:
        raise UsageError(f"--calib-method must be one of {', '.join(METHODS)}, got {method!r}")
    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}[method]
    extra: dict = {"symmetric": symmetric}
    if method != "minmax":
        extra["num_bins"] = NUM_BINS
    if method == "percentile":
        extra["percentile"] = PERCENTILE

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.items = iter([image_feed(input_names, calib[i : i + 1], rng) for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    with work_dir("calib") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):  # no temp files in the cwd, no chatter
        cal = create_calibrator(Path(onnx_path), list(op_types), augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                calibrate_method=cm, extra_options=extra)
        _apply_session_options(cal, onnx_path, session_options)
        cal.collect_data(Reader())
        data = cal.compute_data()
        del cal
    return {name: [float(np.asarray(td.range_value[0]).item()), float(np.asarray(td.range_value[1]).item())]
            for name, td in data.items()}


def _apply_session_options(cal, onnx_path: str | os.PathLike, opts: dict | None) -> None:
    """Recreate the calibrator's session with the ONNX Runtime options export recorded
    (metadata ``udc_edge.session_options``), e.g. buffer reuse off for inverse-DFT graphs."""
    import onnxruntime as ort

    from udc_edge.export.onnxrt import recorded_session_options, session_options

    opts = recorded_session_options(onnx_path) if opts is None else opts
    if not opts:
        return
    # the calibrator runs unoptimised anyway
    so = session_options(options={k: v for k, v in opts.items() if k != "graph_optimization_level"})
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    cal.infer_session = ort.InferenceSession(cal.augmented_model_path, sess_options=so,
                                             providers=cal.execution_providers)


def cached_ranges(onnx_path: str | os.PathLike, calib: CalibrationSet, method: str, symmetric: bool,
                  cache: str | os.PathLike | None = None, input_names: tuple[str, ...] = ("input",),
                  session_options: dict | None = None, onnx_sha256: str | None = None) -> tuple[dict, dict]:
    """Ranges from ``cache`` when its key matches, else computed and written there.

    Returns ``(ranges, info)`` where info says whether the cache was hit and its key.
    ``onnx_sha256``: the file's hash when the caller has it already.
    """
    key = _key(onnx_sha256 or sha256_file(onnx_path), method, calib.sha256, symmetric)
    path = Path(cache) if cache else None
    if path is not None and path.is_file():
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            doc = {}
        if doc.get("format") == CACHE_FORMAT and doc.get("key") == key:
            return doc["ranges"], {"cache": str(path), "hit": True, **key}
    ranges = compute_ranges(onnx_path, calib.images, method, symmetric=symmetric, input_names=input_names,
                            session_options=session_options)
    if path is not None:
        write_json_atomic(path, {"format": CACHE_FORMAT, "key": key, "calibration": calib.describe(), "ranges": ranges})
    return ranges, {"cache": str(path) if path else None, "hit": False, **key}
