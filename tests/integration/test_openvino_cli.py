"""OpenVINO through the CLI: build, bench (1 thread and all cores), verify (a faithful INT8
engine passes, a damaged one fails), and every ONNX Runtime path with openvino/nncf blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.data.images import write_png
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset

runner = CliRunner()
FAST = ["--attacks", "pgd,simba", "--steps", "5", "--simba-iterations", "20", "--limit", "2"]
# white-box-on-engine rows need a replica of the engine's numerics, which OpenVINO IRs do not have yet
FAST_OV = [*FAST, "--no-direct"]
HAS_OV = all(__import__("importlib").util.find_spec(m) for m in ("openvino", "nncf"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ovcli")
    write_synthetic_dataset(root / "ds", SynthSpec(display="toled", count=2, size=48, source="photos:test", seed=5))
    return root


@pytest.mark.skipif(not HAS_OV, reason="openvino/nncf not installed")
def test_build_bench_and_verify_an_openvino_int8_engine(tiny_onnx, tiny_restorer_dir, data):
    res = runner.invoke(app, ["-q", "build", str(tiny_onnx), "--backend", "openvino", "--precision", "int8",
                              "--calib", "synth:toled", "--calib-count", "8", "--calib-size", "48", "--threads", "1",
                              "--out", str(data / "int8.xml")])
    assert res.exit_code == 0, res.output
    assert "openvino int8" in res.output and "runs in" in res.output
    res = runner.invoke(app, ["-q", "bench", str(data / "int8.xml"), "--shape", "1x3x48x48", "--iters", "2",
                              "--warmup", "1", "--threads", "1,all", "--report", str(data / "b")])
    assert res.exit_code == 0, res.output
    rows = json.loads((data / "b" / "bench.json").read_text())["rows"]
    import os

    assert [(r["backend"], r["threads"]) for r in rows] == [("openvino", 1), ("openvino", os.cpu_count())][: len(rows)]
    assert len(rows) == len({1, os.cpu_count()})
    res = runner.invoke(app, ["-q", "verify", "--reference", str(tiny_restorer_dir), "--engine", str(data / "int8.xml"),
                              "--data", str(data / "ds"), "--report", str(data / "r8"), *FAST_OV])
    assert res.exit_code == 0, res.output
    rep = json.loads((data / "r8" / "verify.json").read_text())
    assert rep["passed"] and all(c["passed"] for c in rep["checks"])
    # without --no-direct the rows crafted on the engine cannot run: INCOMPLETE, never a pass
    res = runner.invoke(app, ["-q", "verify", "--reference", str(tiny_restorer_dir), "--engine", str(data / "int8.xml"),
                              "--data", str(data / "ds"), "--report", str(data / "rd"), *FAST, "--attacks", "pgd"])
    assert res.exit_code == 1 and "INCOMPLETE" in res.output and "Traceback" not in res.output, res.output
    rep = json.loads((data / "rd" / "verify.json").read_text())
    assert not rep["passed"] and any("no replica of OpenVINO" in json.dumps(c) for c in rep["checks"])


@pytest.mark.skipif(not HAS_OV, reason="openvino/nncf not installed")
def test_damaged_openvino_int8_engine_fails_verify(tiny_onnx, tiny_restorer_dir, data):
    # INT8 calibrated on constant near-black images: activation ranges far too narrow.
    (data / "grey").mkdir()
    for i in range(6):
        write_png(data / "grey" / f"{i}.png", np.full((48, 48, 3), 0.02, np.float32), 16)
    res = runner.invoke(app, ["-q", "build", str(tiny_onnx), "--backend", "openvino", "--precision", "int8",
                              "--calib", str(data / "grey"), "--calib-size", "48", "--min-fidelity", "1",
                              "--out", str(data / "broken.xml")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "-q",
            "verify",
            "--reference",
            str(tiny_restorer_dir),
            "--engine",
            str(data / "broken.xml"),
            "--data",
            str(data / "ds"),
            "--report",
            str(data / "rb"),
            *FAST_OV,
        ],
    )
    assert res.exit_code == 1, res.output
    rep = json.loads((data / "rb" / "verify.json").read_text())
    assert not rep["passed"]


SCRIPT = """
import json, sys
sys.modules["openvino"] = None  # import blocked: as if the cpu extra were not installed
sys.modules["nncf"] = None
from typer.testing import CliRunner
from udc_edge.cli import app
onnx, d = sys.argv[1], sys.argv[2]
r = CliRunner()
def run(*args):
    res = r.invoke(app, list(args))
    return {"code": res.exit_code, "out": res.output}
out = {
  "int8": run("-q", "build", onnx, "--out", d + "/e8.onnx", "--precision", "int8", "--calib", "synth:toled",
              "--calib-count", "4", "--calib-size", "48"),
  "auto": run("-q", "build", onnx, "--out", d + "/auto.onnx", "--backend", "auto", "--precision", "auto",
              "--calib", "synth:toled", "--calib-count", "4", "--calib-size", "48", "--min-fidelity", "20"),
  "bench": run("-q", "bench", d + "/e8.onnx", "--shape", "1x3x32x32", "--iters", "2", "--warmup", "0",
               "--threads", "1,all"),
  "verify": run("-q", "verify", "--reference", sys.argv[3], "--engine", d + "/e8.onnx", "--data", sys.argv[4],
                "--report", d + "/r", "--attacks", "pgd", "--steps", "2", "--limit", "2"),
  "trt": run("build", onnx, "--out", d + "/x.engine", "--backend", "trt"),
  "ov": run("build", onnx, "--out", d + "/x.xml", "--backend", "openvino"),
  "ov8": run("build", onnx, "--out", d + "/y.xml", "--backend", "openvino", "--precision", "int8",
             "--calib", "synth:toled"),
}
out["loaded"] = [m for m in ("openvino", "nncf") if sys.modules.get(m) is not None]
print("RESULT" + json.dumps(out))
"""


def test_onnx_runtime_paths_work_with_openvino_blocked(tiny_onnx, tiny_restorer_dir, data, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(SCRIPT),
            str(tiny_onnx),
            str(tmp_path),
            str(tiny_restorer_dir),
            str(data / "ds"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert "RESULT" in proc.stdout, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for k in ("int8", "auto", "bench", "verify"):
        assert out[k]["code"] == 0, (k, out[k]["out"])
    auto = " ".join(out["auto"]["out"].split())
    assert "candidate openvino" in auto and "skipped: OpenVINO is not installed" in auto  # said, not hidden
    assert (tmp_path / "auto.onnx").is_file() and (tmp_path / "e8.onnx").is_file()
    assert out["trt"]["code"] == 1 and "TensorRT" in out["trt"]["out"] and "openvino" not in out["trt"]["out"].lower()
    for k in ("ov", "ov8"):
        assert out[k]["code"] == 1 and "pip install 'udc-edge[cpu]'" in " ".join(out[k]["out"].split())
        assert "Traceback" not in out[k]["out"]
    assert out["loaded"] == []
    assert not list(tmp_path.glob("x.*")) and not list(tmp_path.glob("y.*"))
