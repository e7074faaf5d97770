"""Extra graph inputs (a PSF code) at run time: one engine serves two displays. ``build``
calibrates with the recorded (or ``--input``) value, ``restore`` and ``bench`` feed
``--input NAME=FILE.npy|VALUE``, each sample of a batch gets its own value."""

from __future__ import annotations

import json

import byo_obstacles as obstacles
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.data.images import read_image, write_png
from udc_edge.engines import load_engine
from udc_edge.engines.build import build_engine
from udc_edge.engines.spec import BuildSpec
from udc_edge.export.byo import ExtraInput
from udc_edge.export.onnx_export import ExportSpec, example_inputs, export_onnx

runner = CliRunner()


@pytest.fixture(scope="module")
def psf_engine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("psf")
    torch.manual_seed(0)
    net = obstacles.PsfCodeNet().eval()
    spec = ExportSpec(height=24, width=24, parity_images=2, extra_inputs=(ExtraInput.parse("psf_code=1x8:0.2"),))
    export_onnx(net, folder / "p.onnx", spec)
    build_engine(folder / "p.onnx", folder / "e.onnx", BuildSpec(precision="fp32", threads=1))
    return net, folder


def _torch(net, x, code):
    with torch.no_grad():
        return net(torch.from_numpy(x), torch.from_numpy(code)).numpy()


def test_engine_feeds_extra_inputs_per_display_and_per_sample(psf_engine, tmp_path):
    net, folder = psf_engine
    manifest = json.loads((folder / "e.onnx.json").read_text())
    assert manifest["extra_inputs"][0]["name"] == "psf_code"
    x = np.random.default_rng(1).random((2, 3, 21, 27), dtype=np.float32)
    recorded = load_engine(folder / "e.onnx", threads=1)(x)  # image only: the recorded example code
    np.testing.assert_allclose(recorded, _torch(net, x, np.full((2, 8), 0.2, np.float32)), atol=1e-4)
    np.save(tmp_path / "panel.npy", np.linspace(-1, 1, 8, dtype=np.float32))  # batch dim may be left out
    panel = load_engine(folder / "e.onnx", threads=1, inputs={"psf_code": str(tmp_path / "panel.npy")})
    code = np.linspace(-1, 1, 8, dtype=np.float32)[None].repeat(2, 0)
    np.testing.assert_allclose(panel(x), _torch(net, x, code), atol=1e-4)
    assert np.abs(panel(x) - recorded).max() > 0.01  # another display, another output
    two = np.stack([np.full(8, 0.2, np.float32), np.linspace(-1, 1, 8, dtype=np.float32)])
    np.testing.assert_allclose(panel(x, two), _torch(net, x, two), atol=1e-4)  # each sample its own code
    with pytest.raises(UsageError, match="has no such extra input"):
        load_engine(folder / "e.onnx", inputs={"psf": "0.1"})


def test_restore_and_bench_take_input_options(psf_engine, tmp_path):
    net, folder = psf_engine
    img = np.random.default_rng(2).random((30, 22, 3), dtype=np.float32)
    write_png(tmp_path / "a.png", img)
    res = runner.invoke(app, ["restore", str(folder / "e.onnx"), str(tmp_path / "a.png"), "--out",
                              str(tmp_path / "out"), "--input", "psf_code=0.7"])
    assert res.exit_code == 0, res.output
    got = read_image(tmp_path / "out" / "a.png")[0]
    x = read_image(tmp_path / "a.png")[0].transpose(2, 0, 1)[None].astype(np.float32)
    ref = np.clip(_torch(net, x, np.full((1, 8), 0.7, np.float32))[0].transpose(1, 2, 0), 0, 1)
    assert got.shape == (30, 22, 3) and np.abs(got - ref).max() < 0.05
    res = runner.invoke(app, ["restore", str(folder / "e.onnx"), str(tmp_path / "a.png"), "--out",
                              str(tmp_path / "bad"), "--input", "psf_code=nope"])
    assert res.exit_code == 2 and "neither a .npy file nor a number" in res.output
    assert not (tmp_path / "bad").exists()
    res = runner.invoke(app, ["bench", str(folder / "e.onnx"), "--shape", "1x3x24x24", "--iters", "2",
                              "--warmup", "1", "--input", "psf_code=0.7"])
    assert res.exit_code == 0 and "error" not in res.output, res.output


def test_openvino_engines_take_extra_inputs(psf_engine, tmp_path):
    """The same per-display codes through OpenVINO FP32 and NNCF INT8 IR engines (calibrated
    with the --input value, fed at run time like ONNX Runtime's)."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from udc_edge.core.metrics import psnr

    net, folder = psf_engine
    x = example_inputs(("input",), 2, 24, 24, seed=3)[0]  # synthetic UDC captures, like the calibration set
    panel = np.linspace(-1, 1, 8, dtype=np.float32)
    np.save(tmp_path / "panel.npy", panel)
    for prec in ("fp32", "int8"):
        out = tmp_path / f"{prec}.xml"
        build_engine(folder / "p.onnx", out, BuildSpec(backend="openvino", precision=prec, threads=1,
                                                       calib="synth:poled", calib_count=8, inputs=("psf_code=0.5",)))
        assert json.loads(out.with_name(out.name + ".json").read_text())["extra_inputs"][0]["name"] == "psf_code"
        recorded = load_engine(out, threads=1)(x)  # image only: the build's --input value
        other = load_engine(out, threads=1, inputs={"psf_code": str(tmp_path / "panel.npy")})(x)
        want = _torch(net, x, np.full((2, 8), 0.5, np.float32)), _torch(net, x, panel[None].repeat(2, 0))
        def db(got, ref):
            return min(psnr(np.clip(g, 0, 1), np.clip(r, 0, 1)) for g, r in zip(got, ref, strict=True))
        assert db(recorded, want[0]) > (60 if prec == "fp32" else 45), prec
        # INT8 ranges were calibrated for 0.5 (~24-30 dB for another code, ONNX Runtime alike); a code
        # not fed (the recorded one used) would give ~17 dB from the panel's output
        assert db(other, want[1]) > (60 if prec == "fp32" else db(other, want[0]) + 3), prec
        assert np.abs(other - recorded).max() > 0.01
    img = np.random.default_rng(5).random((20, 28, 3), dtype=np.float32)
    write_png(tmp_path / "a.png", img)
    res = runner.invoke(app, ["restore", str(tmp_path / "fp32.xml"), str(tmp_path / "a.png"), "--out",
                              str(tmp_path / "out"), "--input", f"psf_code={tmp_path / 'panel.npy'}"])
    assert res.exit_code == 0, res.output
    got = read_image(tmp_path / "out" / "a.png")[0]
    xi = read_image(tmp_path / "a.png")[0].transpose(2, 0, 1)[None].astype(np.float32)
    ref = np.clip(_torch(net, xi, panel[None])[0].transpose(1, 2, 0), 0, 1)
    assert got.shape == (20, 28, 3) and np.abs(got - ref).max() < 0.05
