"""A TensorRT INT8 build keeps its Q/DQ ONNX (the graph verify's replica is made from) beside the
engine, written with engine and manifest as one unit and hashed in the manifest.

Uses the STAND-IN ``tensorrt`` module of test_tensorrt_standin (NOT TensorRT: no GPU here); the
calibration, quantisation, files and replica are real."""

from __future__ import annotations

import json

import pytest
from test_tensorrt_standin import inject, standin_gpu  # noqa: F401  (fixture)

from udc_edge.core.backends import Backend
from udc_edge.core.errors import EngineError
from udc_edge.deploy.verify_direct import engine_replica
from udc_edge.engines.build import build_engine
from udc_edge.engines.manifest import read_manifest
from udc_edge.engines.spec import BuildSpec


def test_standin_trt_int8_keeps_its_qdq_sidecar_hashed_beside_the_engine_not_tensorrt(
        tiny_onnx, tmp_path, monkeypatch, standin_gpu):  # noqa: F811
    """STAND-IN builder (NOT TensorRT): engine, ENGINE.qdq.onnx and manifest appear together; the
    manifest names the sidecar by name (the folder may move) and hashes it; the replica loads it."""
    inject(monkeypatch, "10.3.0")
    out = tmp_path / "eng" / "r.plan"
    out.parent.mkdir()
    build_engine(tiny_onnx, out, BuildSpec(backend=Backend.TRT, precision="int8", calib="synth:toled",
                                           calib_count=6, calib_size=48, threads=1))
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.plan", "r.plan.calib.json", "r.plan.json",
                                                                 "r.plan.qdq.onnx"]
    man = json.loads((out.parent / "r.plan.json").read_text())
    assert man["build_options"]["qdq_onnx"] == "r.plan.qdq.onnx" and "r.plan.qdq.onnx" in man["files_sha256"]
    moved = tmp_path / "moved"
    out.parent.rename(moved)
    manifest = read_manifest(moved / "r.plan")
    replica, why = engine_replica(moved / "r.plan", manifest)
    assert replica is not None, why
    side = moved / "r.plan.qdq.onnx"
    side.write_bytes(side.read_bytes()[:-8])  # a damaged sidecar is refused on load
    with pytest.raises(EngineError, match=r"r\.plan\.qdq\.onnx does not match"):
        read_manifest(moved / "r.plan")
