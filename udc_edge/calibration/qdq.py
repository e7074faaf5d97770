"""Q/DQ INT8 models from cached ranges, per-layer sensitivity, and automatic exclusion.

Two targets, because the fastest correct INT8 differs:

* ``cpu`` (ONNX Runtime): uint8 asymmetric activations, int8 symmetric per-channel
  weights: 3.06x the speed of torch eager on the shipped UNet at 512 px, 1 thread
  (``python benchmarks/engines.py``, benchmarks/results/engines.json).
* ``tensorrt``: int8 activations and weights, symmetric, zero-point 0, per-channel
  weights: what TensorRT's explicit quantisation accepts (8.6 / 10.x / 11.x).

Only op types that gain from INT8 are quantised (Conv, ConvTranspose, MatMul, Gemm);
shape and indexing ops are never wrapped in Q/DQ. ``auto_exclude`` keeps the most
sensitive layers in float until the output is within ``min_fidelity`` dB of FP32; the
OpenVINO/NNCF path uses the same ``layer_sensitivity`` and ``exclude_until``. Given attacked
images too (``--exclude auto:robust``), a layer's sensitivity is the worse of its clean and
attacked fidelity, and both must meet the target.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from udc_edge.core.backends import QDQ_TARGETS
from udc_edge.core.errors import UsageError
from udc_edge.core.metrics import psnr

QUANT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
TARGETS = QDQ_TARGETS


def quantizable_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANT_OPS]


def prepare(onnx_path: str | os.PathLike) -> onnx.ModelProto:
    """The float model as the quantiser takes it (loaded, shapes inferred, ORT's metadata):
    made once when one model is quantised many ways (``auto_exclude``, ``doctor``)."""
    from onnxruntime.quantization.quant_utils import add_infer_metadata

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    add_infer_metadata(model)
    return model


def quantize_bytes(source: str | os.PathLike | onnx.ModelProto, ranges: dict[str, list[float]], target: str = "cpu",
                   exclude: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> bytes:
    """A Q/DQ model (serialised) of ``source`` (a path, or a :func:`prepare` d model, which is
    not changed) with the given activation ranges."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
    from onnxruntime.quantization.quant_utils import QuantType

    if target not in TARGETS:
        raise UsageError(f"--target must be cpu or tensorrt, got {target!r}")
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)  # the quantiser rewrites the graph it is given
    else:
        model = prepare(source)
    names = set(quantizable_nodes(model))
    unknown = sorted(set(exclude) - names)
    if unknown:
        raise UsageError(f"--exclude names unknown nodes {unknown[:5]}",
                         f"quantisable nodes look like {sorted(names)[:3]}")
    td = TensorsData(
        CalibrationMethod.MinMax,
        {
            k: TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
            for k, (lo, hi) in ranges.items()
        },
    )
    if target == "cpu":
        act, extra = QuantType.QUInt8, {"ActivationSymmetric": False, "WeightSymmetric": True}
    else:
        # TensorRT rejects int32 bias behind DequantizeLinear: keep biases in float.
        act, extra = QuantType.QInt8, {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
    q = QDQQuantizer(model, True, False, QuantType.QInt8, act, td, list(only), list(exclude), list(QUANT_OPS), extra)
    q.quantize_model()
    q.model.topological_sort()  # as ORT's own save does: onnx.checker requires sorted nodes
    return q.model.model.SerializeToString()


Runner = Callable[[bytes, np.ndarray], np.ndarray]


def fidelity(run: Runner, model_bytes: bytes, images: np.ndarray, reference: np.ndarray) -> float:
    """Mean PSNR (dB) of a model's outputs against the FP32 outputs, over held-out images."""
    out = run(model_bytes, images)
    return float(np.mean([psnr(np.clip(o, 0, 1), np.clip(r, 0, 1)) for o, r in zip(out, reference, strict=True)]))


@dataclass
class ExclusionResult:
    model: Any  # the quantised model: Q/DQ bytes (ONNX Runtime / TensorRT) or an OpenVINO model (NNCF)
    fidelity_db: float
    excluded: list[dict] = field(default_factory=list)  # {"node", "reason", "alone_db"}
    sensitivity: dict[str, float] = field(default_factory=dict)
    met: bool = True
    attacked_db: float | None = None  # fidelity on attacked inputs (robust mode)
    trials: list[dict] = field(default_factory=list)  # every choice tried: {"excluded", "clean_db", "attacked_db"}


Attacked = tuple[np.ndarray, np.ndarray]  # (attacked held-out images, the FP32 outputs on them)


def _fids(run: Runner, model: bytes, images: np.ndarray, reference: np.ndarray,
          attacked: Attacked | None) -> tuple[float, float | None]:
    return fidelity(run, model, images, reference), (fidelity(run, model, *attacked) if attacked else None)


def layer_sensitivity(source: onnx.ModelProto, ranges: dict, target: str, run: Runner, images: np.ndarray,
                      reference: np.ndarray, attacked: Attacked | None = None) -> dict[str, float]:
    """The one definition of a layer's sensitivity, for every backend: output PSNR (dB) vs FP32
    when that layer alone is quantised (Q/DQ, these ranges); lower = more sensitive. With
    ``attacked`` (robust mode) the lower of its clean and attacked PSNR."""
    return {n: min(x for x in _fids(run, quantize_bytes(source, ranges, target, only=(n,)), images, reference,
                                    attacked) if x is not None)
            for n in quantizable_nodes(source)}


Trial = Callable[[tuple[str, ...]], tuple[Any, float, float | None]]


def _trial_row(excluded: int, fid: float, adv: float | None) -> dict:
    return {"excluded": excluded, "clean_db": round(fid, 2), "attacked_db": None if adv is None else round(adv, 2)}


def exclude_until(sens: dict[str, float], trial: Trial, min_fidelity: float, max_rounds: int = 12,
                  trials: list[dict] | None = None) -> ExclusionResult:
    """Keep the most sensitive layers in float, in growing groups (1, 2, 4, ...), until
    ``trial(excluded) -> (model, clean_db, attacked_db or None)`` meets ``min_fidelity`` on both
    or ``max_rounds`` is reached. Every choice tried is appended to ``trials``."""
    order = sorted(sens, key=lambda n: sens[n])
    trials = [] if trials is None else trials
    robust = False
    best = ExclusionResult(None, float("-inf"), sensitivity=sens, met=False, trials=trials)
    k = 1
    for _ in range(max_rounds):
        k = min(k, len(order))
        model, fid, adv = trial(tuple(order[:k]))
        robust = robust or adv is not None
        trials.append(_trial_row(k, fid, adv))
        what = "worse of clean and attacked" if robust else "clean"
        excl = [{"node": n, "reason": f"quantised alone: {sens[n]:.1f} dB vs FP32 ({what}; most sensitive first)",
                 "alone_db": round(sens[n], 2)} for n in order[:k]]
        met = min(fid, adv if adv is not None else fid) >= min_fidelity
        best = ExclusionResult(model, fid, excl, sens, met=met, attacked_db=adv, trials=trials)
        if best.met or k == len(order):
            break
        k *= 2
    return best


def auto_exclude(onnx_path: str | os.PathLike, ranges: dict, target: str, run: Runner, images: np.ndarray,
                 reference: np.ndarray, min_fidelity: float, max_rounds: int = 12,
                 attacked: Attacked | None = None) -> ExclusionResult:
    """Quantise all layers; if fidelity < min_fidelity (on clean and, with ``attacked``, on
    attacked images too), keep the most sensitive in float (:func:`layer_sensitivity` order,
    :func:`exclude_until` groups)."""
    source = prepare(onnx_path)  # once: every trial below quantises a copy

    def trial(excluded: tuple[str, ...]) -> tuple[bytes, float, float | None]:
        model = quantize_bytes(source, ranges, target, exclude=excluded)
        return (model, *_fids(run, model, images, reference, attacked))

    full, fid, adv = trial(())
    trials = [_trial_row(0, fid, adv)]
    if min(fid, adv if adv is not None else fid) >= min_fidelity:
        return ExclusionResult(full, fid, attacked_db=adv, trials=trials)
    sens = layer_sensitivity(source, ranges, target, run, images, reference, attacked)
    return exclude_until(sens, trial, min_fidelity, max_rounds, trials)
