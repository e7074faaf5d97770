"""Doctor's verdict is what its proposed commands do: for the tiny networks of
``tests/byo_obstacles.py`` built like published UDC restorers (a UNet concatenation that
needs multiples of 16, Unfold kernel prediction, a PSF-code second input, a tuple output, an
FFT block) doctor runs its export/build/restore lines and says OK only when they all work;
each network then exports with dynamic H/W, builds INT8 and restores at 72x88 and 100x60.
A proposal that fails in the trial, an unbatchable extra input and a multiple above 256 are
BLOCKED."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import byo_obstacles as obstacles
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.metrics import psnr
from udc_edge.data.images import read_image
from udc_edge.doctor.trial import PROBE_SIZES, WEIGHTS_PLACEHOLDER
from udc_edge.engines import load_engine
from udc_edge.export.byo import cpu_only
from udc_edge.export.onnx_export import example_inputs
from udc_edge.models.padding import crop, pad_to_multiple

runner = CliRunner()
SIZE = ["--height", "32", "--width", "32"]
CASES = {  # network -> (doctor options, flags its export line must carry, forward kwargs for torch)
    "ConcatUNet": ((), ("--multiple 16",), {}),
    "UnfoldKPN": ((), ("--exporter dynamo",), {}),
    "PsfCodeNet": (("--extra-input", "psf_code=1x8:0.25"), ("--extra-input psf_code=1x8:0.25",),
                   {"psf_code": np.full((1, 8), 0.25, np.float32)}),
    "TupleNet": ((), ("--output-index 0",), {}),
    "FFTNet": ((), ("--exporter dynamo",), {}),
}


def doctor(tmp_path: Path, name: str, *args: str):
    res = runner.invoke(app, ["-q", "--threads", "1", "doctor", f"byo_obstacles:{name}", *args, *SIZE,
                              "--runs", "2", "-o", str(tmp_path / "report"), "--keep", str(tmp_path / "trial")])
    rep = json.loads((tmp_path / "report" / "doctor.json").read_text())
    return res, rep


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(Path(p or ".").resolve()) for p in sys.path),
            "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_doctor_verdict_is_what_its_commands_do_and_int8_restores_two_sizes(tmp_path, monkeypatch, name):
    args, flags, kwargs = CASES[name]
    res, rep = doctor(tmp_path, name, *args)
    assert res.exit_code == 0, res.output
    assert rep["ok"] and [t["exit_code"] for t in rep["trial"]] == [0, 0, 0]
    assert [t["command"] for t in rep["trial"]] == rep["commands"]
    export = rep["commands"][0]
    assert all(f in export for f in flags) and "--fixed-shape" not in export, export
    assert not any(line.startswith(("WARNING", "INFO")) or "\x1b[" in line for line in res.output.splitlines())
    # The trial's model.onnx (kept), an INT8 build, and restores at two sizes that are not
    # multiples of each other nor of the network's multiple: engine vs eager torch.
    from udc_edge.models.checkpoint import load_weights

    monkeypatch.chdir(tmp_path / "trial")
    with cpu_only():
        net = getattr(obstacles, name)().eval()
    load_weights(net, WEIGHTS_PLACEHOLDER)  # the random initialisation doctor diagnosed and exported
    assert json.loads(Path("model.onnx.export.json").read_text())["dynamic"]
    out = runner.invoke(app, ["-q", "build", "model.onnx", "--out", "int8.onnx", "--precision", "int8",
                              "--calib", "synth:poled", "--calib-count", "6", "--threads", "1"])
    assert out.exit_code == 0, out.output
    assert json.loads(Path("int8.onnx.json").read_text())["precision"] == "int8"
    m = rep["structure"]["multiple"]
    engine = load_engine("int8.onnx", threads=1)
    for h, w in PROBE_SIZES:
        x = example_inputs(("input",), 1, h, w, seed=7)[0]
        xp, size = pad_to_multiple(torch.from_numpy(x), m)
        with torch.no_grad(), cpu_only():
            ref = net(xp, **{k: torch.from_numpy(v) for k, v in kwargs.items()})
        ref = crop(ref[0] if isinstance(ref, tuple) else ref, size).numpy()
        got = engine(x)
        assert got.shape == (1, 3, h, w)
        assert psnr(np.clip(got[0], 0, 1), np.clip(ref[0], 0, 1)) > 30


@pytest.mark.slow
def test_printed_commands_run_as_printed(tmp_path, weights_psf):
    """The 'next:' lines doctor prints are the lines it ran; run here, each exits 0."""
    code_file, weights = weights_psf
    res = runner.invoke(app, ["-q", "--threads", "1", "doctor", "byo_obstacles:PsfCodeNet", "--weights", weights,
                              "--extra-input", f"psf_code=1x8:{code_file}", *SIZE, "--runs", "2"])
    assert res.exit_code == 0, res.output
    printed = [ln.split("next: ", 1)[1] for ln in res.output.splitlines() if ln.strip().startswith("next: ")]
    tried = [ln.split(" s: ", 1)[1] for ln in res.output.splitlines() if ln.strip().startswith("tried: exit 0")]
    assert len(printed) == 3 and tried == printed
    assert "--input psf_code=" in printed[1] and "--input psf_code=" in printed[2]
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    from udc_edge.data.images import write_png

    for h, w in PROBE_SIZES:
        write_png(run_dir / f"probe-{h}x{w}.png", example_inputs(("input",), 1, h, w, seed=2)[0][0].transpose(1, 2, 0))
    for line in printed:
        args = shlex.split(line)
        assert args[0] == "udc-edge"
        proc = subprocess.run([sys.executable, "-m", "udc_edge", *args[1:]], cwd=run_dir, env=_env(),
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
    for h, w in PROBE_SIZES:
        assert read_image(run_dir / "restored" / f"probe-{h}x{w}.png")[0].shape == (h, w, 3)


@pytest.fixture
def weights_psf(tmp_path):
    from safetensors.torch import save_file

    np.save(tmp_path / "code.npy", np.linspace(0, 1, 8, dtype=np.float32).reshape(1, 8))
    torch.manual_seed(1)
    save_file({k: v.contiguous() for k, v in obstacles.PsfCodeNet().state_dict().items()},
              str(tmp_path / "psf.safetensors"))
    return str(tmp_path / "code.npy"), str(tmp_path / "psf.safetensors")


def test_a_proposal_that_fails_in_the_trial_blocks(tmp_path):
    """PosEmbedNet exports with parity at 32 and 34x36 px, but its build calibrates on 128 px
    images, beyond its 96 px embedding: the build fails, so BLOCKED, naming the command."""
    res, rep = doctor(tmp_path, "PosEmbedNet")
    assert res.exit_code == 1 and "BLOCKED" in res.output, res.output
    assert [t["exit_code"] for t in rep["trial"]] == [0, 1]  # export ran, build failed, restore not reached
    blocker = "doctor's trial of its proposal failed: `udc-edge build model.onnx --out engine.onnx"
    assert any(b.startswith(blocker) and "exited 1: error: model.onnx fails on the 128x128 calibration images"
               in b for b in rep["blockers"]), rep["blockers"]
    assert "next:" not in res.output and not (Path.cwd() / "engine.onnx").exists()


def test_unbatchable_extra_input_and_huge_multiple_are_blocked(tmp_path):
    res, rep = doctor(tmp_path, "UnbatchedCodeNet", "--extra-input", "psf_code=1x8:0.5")
    assert res.exit_code == 1 and rep["trial"] == []
    assert "extra input(s) psf_code cannot be batched with the image (in a batch of 2, sample 1's output differs" \
        in res.output and "--freeze-input" in res.output
    res, rep = doctor(tmp_path, "HugeMultipleNet")
    assert res.exit_code == 1 and "needs a multiple above 256" in res.output and rep["trial"] == []
    assert "at multiple 256: 256x256: RuntimeError: Sizes of tensors must match" in res.output
