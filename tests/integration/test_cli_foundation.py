"""The CLI's contract: help, version, exit codes, one-line errors, the demo."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from udc_edge.cli import app

runner = CliRunner()


def test_help_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "demo" in res.output and "data" in res.output
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("udc-edge ")


def test_data_synth_writes_dataset(tmp_path):
    out = tmp_path / "ds"
    res = runner.invoke(app, ["-q", "data", "synth", str(out), "--count", "2", "--size", "48", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert "degraded PSNR" in res.output
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["count"] == 2 and meta["spec"]["seed"] == 3
    assert len(list((out / "lq").iterdir())) == 2


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    res = runner.invoke(app, ["data", "synth", str(tmp_path / "ds"), "--display", "amoled"])
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) <= 2 and "unknown display 'amoled'" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "ds").exists()


def test_usage_errors_exit_2(tmp_path):
    res = runner.invoke(app, ["data", "synth", str(tmp_path / "ds"), "--count", "0"])
    assert res.exit_code == 2 and "--count" in res.output
    res = runner.invoke(app, ["data", "synth", str(tmp_path / "ds"), "--size", "20"])
    assert res.exit_code == 2 and "--size >= 32" in res.output


def test_debug_shows_the_traceback(tmp_path):
    res = runner.invoke(app, ["--debug", "data", "synth", str(tmp_path / "ds"), "--display", "amoled"])
    assert res.exit_code == 1 and res.exception is not None and type(res.exception).__name__ == "LayoutError"


def test_existing_output_is_not_clobbered(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    res = runner.invoke(app, ["-q", "data", "synth", str(out), "--count", "1", "--size", "40"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert (out / "mine.txt").read_text() == "keep"


def test_data_psf_writes_png_and_npy(tmp_path):
    res = runner.invoke(app, ["data", "psf", "--display", "toled", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    psf = np.load(tmp_path / "p.npy", allow_pickle=False)
    np.testing.assert_allclose(psf.sum(axis=(0, 1)), 1.0, atol=1e-5)
    assert (tmp_path / "p.png").stat().st_size > 0
    res = runner.invoke(app, ["data", "psf", "--out", str(tmp_path / "p.npy")])
    assert res.exit_code == 2


def test_demo_quick_runs_the_whole_pipeline(tmp_path):
    res = runner.invoke(app, ["-q", "demo", "--out", str(tmp_path / "demo"), "--quick"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    by_name = {s["name"]: s for s in report["stages"]}
    for name in ("synthesise", "restore", "attack", "export + build", "bench", "verify"):
        assert by_name[name]["status"] == "done", (name, by_name[name]["note"])
    # A missing part says so; it never pretends to have run.
    assert by_name["purify"]["status"] in ("done", "not built yet")
    restore, attack = by_name["restore"]["details"], by_name["attack"]["details"]
    assert restore["output_psnr"] > restore["input_psnr"] + 3  # the shipped restorer works
    assert attack["attacked_psnr"] < attack["clean_psnr"] - 3  # PGD 8/255 hurts it
    assert by_name["verify"]["details"]["passed"] is True
    md = (tmp_path / "demo" / "report.md").read_text()
    assert "| verify | done |" in md and "Robustness parity" in md
    for png in ("grid.png", "psf.png", "bench.png"):
        assert (tmp_path / "demo" / png).exists()
    # like every other command: a non-empty folder it did not make is refused without --overwrite,
    # while its own earlier output may be replaced by a rerun
    from udc_edge.commands.demo import _previous_demo

    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("x")
    res = runner.invoke(app, ["-q", "demo", "--out", str(tmp_path / "precious"), "--quick"])
    assert res.exit_code == 1 and "--overwrite" in res.output, res.output
    assert (tmp_path / "precious" / "notes.txt").read_text() == "x"
    assert _previous_demo(tmp_path / "demo") and not _previous_demo(tmp_path / "precious")


def test_the_cli_starts_without_importing_torch():
    """`udc-edge --help` and light commands must not pay torch's ~1 s import: command
    modules import their heavy parts inside the commands."""
    import subprocess
    import sys

    code = "import sys, udc_edge.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
