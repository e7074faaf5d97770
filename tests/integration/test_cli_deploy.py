"""`udc-edge export` and `udc-edge build` through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from udc_edge.cli import app

runner = CliRunner()


def test_export_then_build_fp32_and_int8(tiny_restorer_dir, tmp_path):
    onnx_path = tmp_path / "m.onnx"
    res = runner.invoke(app, ["export", str(tiny_restorer_dir), "--out", str(onnx_path),
                              "--height", "48", "--width", "48"])
    assert res.exit_code == 0, res.output
    assert "max abs error" in res.output and onnx_path.exists()
    assert json.loads((tmp_path / "m.onnx.export.json").read_text())["exporter"] == "torchscript"
    res = runner.invoke(app, ["-q", "build", str(onnx_path), "--out", str(tmp_path / "e32.onnx")])
    assert res.exit_code == 0 and "onnxruntime fp32" in res.output
    res = runner.invoke(app, ["-q", "build", str(onnx_path), "--out", str(tmp_path / "e8.onnx"), "--precision", "int8",
                              "--calib", "synth:toled", "--calib-count", "6", "--calib-method", "minmax"])
    assert res.exit_code == 0, res.output
    assert "onnxruntime int8" in res.output and "dB PSNR" in res.output
    manifest = json.loads((tmp_path / "e8.onnx.json").read_text())
    assert manifest["precision"] == "int8" and (tmp_path / "e8.onnx.calib.json").exists()


def test_build_errors(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"not onnx")
    res = runner.invoke(app, ["build", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 1 and "not a valid ONNX" in res.output
    res = runner.invoke(app, ["build", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "e.onnx"),
                              "--precision", "fp16"])
    assert res.exit_code == 2 and "--backend trt" in res.output
    res = runner.invoke(app, ["build", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "e.onnx"),
                              "--precision", "int8"])
    assert res.exit_code == 2 and "--calib" in res.output
    res = runner.invoke(app, ["build", str(tmp_path / "x.onnx"), "--out", str(tmp_path / "e.onnx"),
                              "--min-shape", "1x3x8x8"])
    assert res.exit_code == 2 and "--max-shape" in res.output
    assert not (tmp_path / "e.onnx").exists()


def test_export_errors(tmp_path):
    res = runner.invoke(app, ["export", "unet-s", "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 1 and "without trained weights" in res.output
