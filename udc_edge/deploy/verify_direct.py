"""White-box attacks on the engine's own numerics, for ``udc-edge verify``.

Transferred rows craft on the FP32 reference; an attacker holding the engine can do
better with a differentiable replica of it (:mod:`udc_edge.engines.replica`). Here the
replica is built from the engine's graph, checked against the engine on the clean
verification images (``min_replica_match`` dB, 50 by default: a replica that does not
compute what the engine computes would measure some other network), and only then used:
each white-box attack is crafted on the replica and its inputs are run by the engine
itself; the reference side is the reference's own white-box result (crafted on and
evaluated on the reference, same budget and steps). Anything that stops the replica
(no Q/DQ graph for this backend, an op it cannot represent, torch missing, a poor match)
turns the rows into "not run" with the reason; they never pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.data.images import to_hwc

#: Row labels: what each side's inputs were crafted on / run by.
CRAFTED_DIRECT = "reference / engine replica"
EVALUATED = "reference / engine"


def engine_replica(engine_path: str | os.PathLike, manifest: Any) -> tuple[Any, str]:
    """``(replica module, "")`` for an engine, or ``(None, why not)``."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "the replica needs PyTorch, which is not installed here (pip install torch, or verify on a host)"
    from udc_edge.engines.replica import OnnxReplica, ReplicaError

    backend = getattr(manifest, "backend", "")
    if backend == "onnxruntime":
        graph = engine_path
    elif backend == "tensorrt" and (manifest.build_options or {}).get("qdq_onnx"):
        graph = Path(engine_path).with_name(Path(manifest.build_options["qdq_onnx"]).name)  # beside the engine
    elif backend == "openvino":
        return None, (
            "no replica of OpenVINO engines yet (NNCF FakeQuantize IR; docs/verify.md): give --no-direct "
            "to verify without these rows, or verify the ONNX Runtime INT8 engine built from the same ONNX"
        )
    else:
        return None, f"no replica for a {backend or 'unknown'} engine without its Q/DQ ONNX beside it"
    try:
        rep = OnnxReplica.from_file(graph, multiple=int(getattr(manifest, "multiple", 1) or 1))
    except ReplicaError as exc:
        return None, exc.message
    except OSError as exc:
        return None, f"cannot read the engine graph {graph}: {exc}"
    return rep.eval(), ""


def replica_match(replica: Any, engine_clean: list[np.ndarray], lq: list[np.ndarray]) -> float:
    """PSNR (dB) of the replica's outputs against the engine's over all clean images pooled
    (one MSE): a mean of per-image PSNRs would let one bit-exact image (capped at 100 dB)
    hide poor ones."""
    from udc_edge.evaluation.robustness import as_target, forward

    rep = as_target(replica)
    mse = np.mean(
        [np.mean((forward(rep, x).astype(np.float64) - e) ** 2) for x, e in zip(lq, engine_clean, strict=True)]
    )
    return float(100.0 if mse == 0 else min(100.0, 10 * np.log10(1.0 / mse)))


def whitebox_labels(rs: Any) -> list[str]:
    """The reference set's white-box attack labels that the replica can be attacked with
    (not the adaptive ones of a defended pipeline)."""
    return [k for k in rs.transferred if "adaptive" not in k]


def craft_on_replica(replica: Any, engine: Any, rs: Any, label: str, spec: Any) -> list[np.ndarray]:
    """The engine's outputs on inputs crafted white-box on its replica (one per image)."""
    from udc_edge.evaluation.robustness import as_target, forward, run_one

    target = as_target(replica)
    a = spec.attack_spec(label.split("@")[0])
    outs = []
    for x, g in zip(rs.lq, rs.gt, strict=True):
        adv = to_hwc(run_one(target, a, x, g).x_adv)
        outs.append(forward(engine, adv))
    return outs
