"""`udc-edge restore`, `udc-edge models` and `udc-edge train restorer` through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.data.images import read_image, write_png
from udc_edge.models import create, save_checkpoint

runner = CliRunner()


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = create("unet-t")
    save_checkpoint(tmp_path / "ckpt", model, {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}})
    return tmp_path / "ckpt"


def test_restore_keeps_names_sizes_and_bit_depth(tmp_path, ckpt, rng):
    (tmp_path / "in").mkdir()
    write_png(tmp_path / "in" / "a8.png", rng.random((37, 53, 3)).astype(np.float32), 8)
    write_png(tmp_path / "in" / "b16.png", rng.random((30, 41, 3)).astype(np.float32), 16)
    res = runner.invoke(app, ["-q", "restore", str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    a, ai = read_image(tmp_path / "out" / "a8.png")
    b, bi = read_image(tmp_path / "out" / "b16.png")
    assert a.shape == (37, 53, 3) and ai.bit_depth == 8
    assert b.shape == (30, 41, 3) and bi.bit_depth == 16


def test_restore_reports_psnr_with_gt_and_tiles_match(tmp_path, ckpt, rng):
    (tmp_path / "in").mkdir()
    (tmp_path / "gt").mkdir()
    img = rng.random((70, 90, 3)).astype(np.float32)
    write_png(tmp_path / "in" / "x.png", img, 16)
    write_png(tmp_path / "gt" / "x.png", np.clip(img + 0.05, 0, 1), 16)
    res = runner.invoke(app, ["-q", "restore", str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "o1"),
                              "--gt", str(tmp_path / "gt")])
    assert res.exit_code == 0 and "PSNR" in res.output
    res = runner.invoke(app, ["-q", "restore", str(ckpt), str(tmp_path / "in"), "--out", str(tmp_path / "o2"),
                              "--tile", "48", "--overlap", "16"])
    assert res.exit_code == 0, res.output
    whole, _ = read_image(tmp_path / "o1" / "x.png")
    tiled, _ = read_image(tmp_path / "o2" / "x.png")
    # A tiny 2-level UNet has a small receptive field: blended tiles agree closely.
    assert np.abs(whole - tiled).mean() < 0.01


def test_restore_errors(tmp_path, ckpt):
    res = runner.invoke(app, ["restore", "unet-s-nope", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "neither a shipped model nor a checkpoint" in res.output
    res = runner.invoke(app, ["restore", "unet-s", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "without trained weights" in res.output
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["restore", str(ckpt), str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "has no images" in res.output


def test_bring_your_own_weights(tmp_path, rng):
    model = create("unet-t")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    write_png(tmp_path / "x.png", rng.random((32, 32, 3)).astype(np.float32), 8)
    res = runner.invoke(app, ["-q", "restore", "-", str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                              "--arch", "unet-t", "--weights", str(tmp_path / "w.pt")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "x.png").exists()


def test_models_lists_presets_with_macs():
    res = runner.invoke(app, ["models", "--size", "64"])
    assert res.exit_code == 0
    assert "unet-s" in res.output and "nafnet-t" in res.output


def test_train_cli_runs(tmp_path):
    res = runner.invoke(app, ["-q", "train", "restorer", "--arch", "unet-t", "--data", "synth:toled", "--steps", "2",
                              "--batch", "2", "--patch", "48", "--pool", "2", "--val-every", "2", "--val-count", "1",
                              "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "validation PSNR" in res.output and (tmp_path / "run" / "best" / "config.json").exists()
    res = runner.invoke(app, ["train", "restorer", "--arch", "unet-q", "--steps", "1", "--out", str(tmp_path / "r2")])
    assert res.exit_code == 1 and "unet-t" in res.output
