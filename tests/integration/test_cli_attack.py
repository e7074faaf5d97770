"""`udc-edge attack` and `udc-edge eval` through the CLI: files, tables, exit codes."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from udc_edge.attacks.io import read_adversarial
from udc_edge.cli import app
from udc_edge.core.fileio import MARKER
from udc_edge.data.readers import open_paired_dataset
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
from udc_edge.models import create, save_checkpoint

runner = CliRunner()
FAST = ["--steps", "3", "--simba-iterations", "15", "--square-queries", "10"]



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny unet-t checkpoint and two 64x64 synthetic P-OLED pairs."""
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_checkpoint(root / "ckpt", create("unet-t"), {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}})
    write_synthetic_dataset(root / "data", SynthSpec(display="poled", count=2, size=64, seed=3))
    (root / "lq_only").mkdir()
    for f in (root / "data" / "lq").iterdir():
        (root / "lq_only" / f.name).write_bytes(f.read_bytes())
    return root


def _run(*args: str):
    return runner.invoke(app, ["-q", *map(str, args)])


def test_attack_writes_npy_inputs_inside_the_budget(setup, tmp_path):
    out = tmp_path / "adv"
    res = _run("attack", setup / "ckpt", "--data", setup / "data", "--attack", "pgd", "--eps", "8/255",
               "--steps", "4", "--out", out)
    assert res.exit_code == 0, res.output
    assert "wrote 2 adversarial input(s) (npy)" in res.output
    meta = json.loads((out / "attack.json").read_text())
    assert meta["attack"] == "pgd" and meta["eps_label"] == "8/255" and meta["spec"]["steps"] == 4
    ds = open_paired_dataset(setup / "data")
    for rec, pair in zip(meta["images"], ds, strict=True):
        adv = read_adversarial(out / rec["file"])
        assert adv.dtype == np.float32 and adv.shape == pair.lq.shape
        assert np.abs(adv - pair.lq).max() <= 8 / 255 + 1e-6
        assert rec["queries"] == 4 and rec["psnr_attacked"] < rec["psnr_clean"]
    res = _run("attack", setup / "ckpt", "--data", setup / "data", "--eps", "8/255", "--out", out)
    assert res.exit_code == 1 and "not empty" in res.output


def test_attack_png16_keeps_a_one_level_budget(setup, tmp_path):
    out = tmp_path / "adv16"
    res = _run("attack", setup / "ckpt", "--data", setup / "data", "--eps", "1/255", "--format", "png16",
               "--limit", "1", "--steps", "3", "--out", out)
    assert res.exit_code == 0, res.output
    (png,) = (out / "adv").iterdir()
    assert png.suffix == ".png"
    delta = read_adversarial(png) - open_paired_dataset(setup / "data")[0].lq
    assert 0.5 / 255 < np.abs(delta).max() <= 1 / 255 + 1e-6
    res = _run("attack", setup / "ckpt", "--data", setup / "data", "--eps", "1/255", "--format", "png8",
               "--out", tmp_path / "x")
    assert res.exit_code == 2 and not (tmp_path / "x").exists()


def test_eval_writes_report_table_and_grid(setup, tmp_path):
    out = tmp_path / "rep"
    res = _run("eval", setup / "ckpt", "--data", setup / "data", "--attacks", "pgd,cw,simba,square",
               "--eps", "2/255,8/255", "--cw-search-steps", "1", "--cw-max-iter", "5", *FAST, "--out", out)
    assert res.exit_code == 0, res.output
    assert "robustness on 2 image(s)" in res.output and "clean" in res.output
    rep = json.loads((out / "report.json").read_text())
    rows = [(r["attack"], r["eps_label"]) for r in rep["rows"]]
    assert rows == [("pgd", "2/255"), ("pgd", "8/255"), ("cw", "-"), ("simba", "2/255"), ("simba", "8/255"),
                    ("square", "2/255"), ("square", "8/255")]
    assert all(r["psnr_drop"] is not None and r["queries_mean"] > 0 for r in rep["rows"])
    assert "| square | 8/255 |" in (out / "report.md").read_text()
    assert (out / "grid.png").stat().st_size > 1000
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "grid.png", "report.json", "report.md"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--eps", "0"], 2, "outside (0, 1]"),
    (["--eps", "2"], 2, "outside (0, 1]"),
    (["--eps", "4/255,abc"], 2, "not a number"),
    (["--attacks", "pgd,simab"], 2, "did you mean simba"),
    (["--attacks", "fgsm"], 2, "unknown attack"),
    (["--steps", "0"], 2, "steps"),
    (["--attacks", "simba", "--simba-iterations", "0"], 2, "simba_iterations"),
    (["--limit", "0"], 2, "--limit"),
    (["--objective", "psnr"], 2, "psnr"),
])
def test_eval_bad_input_is_a_clear_error(setup, tmp_path, args, code, message):
    res = _run("eval", setup / "ckpt", "--data", setup / "data", *args, "--out", tmp_path / "r")
    assert res.exit_code == code, res.output
    assert message in res.output
    assert not (tmp_path / "r").exists()


def test_data_without_ground_truth(setup, tmp_path):
    res = _run("eval", setup / "ckpt", "--data", setup / "lq_only", "--attacks", "pgd", "--out", tmp_path / "r")
    assert res.exit_code == 1 and "no ground truth" in res.output and "--objective clean" in res.output
    assert not (tmp_path / "r").exists()
    res = _run("eval", setup / "ckpt", "--data", setup / "lq_only", "--attacks", "pgd", "--objective", "clean",
               "--eps", "8/255", *FAST, "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "r" / "report.json").read_text())["reference"] == "the clean output"


def test_unknown_model_and_missing_engine(setup, tmp_path):
    res = _run("eval", "unet-s-nope", "--data", setup / "data", "--out", tmp_path / "r")
    assert res.exit_code == 1 and "neither a shipped model nor a checkpoint" in res.output
    res = _run("eval", tmp_path / "none.onnx", "--data", setup / "data", "--attacks", "simba", "--out", tmp_path / "r")
    assert res.exit_code == 1 and "does not exist" in res.output


@pytest.fixture(scope="module")
def engine(setup):
    """An ONNX Runtime engine of the checkpoint, with the manifest load_engine checks."""
    pytest.importorskip("onnxruntime")
    from udc_edge.core.fileio import sha256_file
    from udc_edge.engines.manifest import Manifest, write_manifest
    from udc_edge.engines.ort import get_version
    from udc_edge.models import load_checkpoint

    model, _ = load_checkpoint(setup / "ckpt")
    path = setup / "restorer.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.rand(1, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}})
    write_manifest(path, Manifest(backend="onnxruntime", backend_version=get_version(), precision="fp32",
                                  requested_precision="fp32", engine_sha256=sha256_file(path),
                                  multiple=model.multiple))
    return path


def test_engine_black_box_transfer_and_white_box_refusal(setup, engine, tmp_path):
    res = _run("eval", engine, "--data", setup / "data", "--attacks", "pgd,simba", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--surrogate" in res.output and "simba, square" in res.output
    res = _run("attack", engine, "--data", setup / "data", "--attack", "cw", "--out", tmp_path / "a")
    assert res.exit_code == 2 and "--surrogate" in res.output
    res = _run("eval", engine, "--data", setup / "data", "--attacks", "pgd,simba", "--eps", "8/255",
               "--reference", setup / "ckpt", "--limit", "1", *FAST, "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [r["transfer"] for r in rep["rows"]] == [True, False]
    assert rep["model"]["source"] == "engine" and rep["rows"][1]["queries_mean"] > 15
    assert "(transfer)" in (tmp_path / "r" / "report.md").read_text() and "pgd*" in res.output
