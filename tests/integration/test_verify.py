"""`udc-edge verify` passes a faithful engine and catches a broken one (exit code 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.data.images import write_png
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
from udc_edge.deploy.verify import VerifySpec
from udc_edge.engines.build import build_engine
from udc_edge.engines.spec import BuildSpec

runner = CliRunner()
FAST = ["--attacks", "pgd,simba", "--steps", "5", "--simba-iterations", "20", "--limit", "2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    write_synthetic_dataset(root / "ds", SynthSpec(display="toled", count=2, size=48, source="photos:test", seed=5))
    return root


def test_faithful_fp32_engine_passes(tiny_onnx, tiny_restorer_dir, data):
    build_engine(tiny_onnx, data / "fp32.onnx", BuildSpec())
    res = runner.invoke(app, ["-q", "verify", "--reference", str(tiny_restorer_dir),
                              "--engine", str(data / "fp32.onnx"), "--data", str(data / "ds"),
                              "--report", str(data / "r32"), *FAST])
    assert res.exit_code == 0, res.output
    rep = json.loads((data / "r32" / "verify.json").read_text())
    assert rep["passed"] and rep["images"] == 2
    names = [c["name"] for c in rep["checks"]]
    assert any("transferred" in n for n in names) and any("black-box" in n for n in names)
    assert (data / "r32" / "verify.md").exists() and (data / "r32" / "worst.png").exists()


def test_damaged_int8_engine_fails(tiny_onnx, tiny_restorer_dir, data):
    # INT8 calibrated on constant grey images, no exclusions: activation ranges far too narrow.
    (data / "grey").mkdir()
    for i in range(4):
        write_png(data / "grey" / f"{i}.png", np.full((48, 48, 3), 0.02, np.float32), 16)
    build_engine(tiny_onnx, data / "broken.onnx", BuildSpec(precision="int8", calib=str(data / "grey"),
                                                            calib_method="minmax", min_fidelity=1.0))
    res = runner.invoke(app, ["-q", "verify", "--reference", str(tiny_restorer_dir),
                              "--engine", str(data / "broken.onnx"), "--data", str(data / "ds"),
                              "--report", str(data / "rb"), *FAST])
    assert res.exit_code == 1, res.output
    rep = json.loads((data / "rb" / "verify.json").read_text())
    assert not rep["passed"]
    fid = next(c for c in rep["checks"] if c["name"].startswith("output fidelity"))
    assert not fid["passed"]


def test_bad_thresholds_and_inputs(tiny_restorer_dir, data, tmp_path):
    with pytest.raises(UsageError, match="--max-psnr-drop"):
        VerifySpec(max_psnr_drop=-1)
    # an explicit --limit is a requirement, even when it equals the default of "up to 8"
    res = runner.invoke(app, ["verify", "--reference", str(tiny_restorer_dir), "--engine", str(data / "fp32.onnx"),
                              "--data", str(data / "ds"), "--report", str(tmp_path / "r8"), "--limit", "8"])
    assert res.exit_code == 1 and "2 pairs, fewer than --limit 8" in res.output
    assert not (tmp_path / "r8").exists()
    assert VerifySpec().pairs(2) == 2 and VerifySpec().pairs(20) == 8 and VerifySpec(limit=3).pairs(20) == 3
    res = runner.invoke(app, ["verify", "--engine", str(data / "fp32.onnx"), "--report", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--reference" in res.output
    res = runner.invoke(app, ["verify", "--reference", str(tiny_restorer_dir), "--engine", str(data / "fp32.onnx"),
                              "--data", str(data / "ds"), "--report", str(tmp_path / "r"), "--attacks", "pdg"])
    assert res.exit_code == 2 and "pgd" in res.output


def test_defended_pipeline_engine_verifies_against_purifier_plus_restorer(tiny_restorer_dir, data, tmp_path):
    """--purifier: same fixed noise on both sides; white-box attacks adaptive (EOT through the purifier)."""
    res = runner.invoke(app, ["-q", "export", str(tiny_restorer_dir), "--purifier", "purifier-poled-k1",
                              "--out", str(tmp_path / "pipe.onnx"), "--height", "48", "--width", "48"])
    assert res.exit_code == 0, res.output
    build_engine(tmp_path / "pipe.onnx", tmp_path / "pipe32.onnx", BuildSpec())
    args = ["-q", "verify", "--reference", str(tiny_restorer_dir), "--engine", str(tmp_path / "pipe32.onnx"),
            "--data", str(data / "ds"), "--report", str(tmp_path / "r"), *FAST]
    res = runner.invoke(app, [*args, "--purifier", "purifier-poled-k1", "--eot", "2"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r" / "verify.json").read_text())
    assert rep["passed"] and any("adaptive+EOT2" in c["name"] for c in rep["checks"])
    fid = next(c for c in rep["checks"] if c["name"].startswith("output fidelity"))
    assert fid["value"] > 60  # same noise on both sides: the FP32 graph reproduces torch
    res = runner.invoke(app, [*args, "--report", str(tmp_path / "r2")])  # a two-input engine without --purifier
    assert res.exit_code == 2 and "--purifier" in res.output
