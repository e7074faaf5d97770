"""A device-side install has no PyTorch: build --bundle, bench, verify --bundle and restore
ENGINE must run with torch's import blocked, on real engines built from a real bundle.

Each command runs in a subprocess whose prelude puts an import hook first on
``sys.meta_path`` that refuses ``torch`` and the other ``torch``-extra libraries, as if
they were not installed (``sys.modules["torch"] = None`` would also block them, but
scipy's array-API layer then trips over the ``None`` entry, which a real runtime-only
install never has). The assertions read what the commands wrote: engines, manifests,
bench/verify JSON and restored images compared with the torch model's own output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from udc_edge.core.metrics import psnr
from udc_edge.data.images import read_image, write_png
from udc_edge.deploy.bundle import write_bundle

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """
import sys

class _NoTorchExtra:
    blocked = ("torch", "torchvision", "diffusers", "safetensors", "onnxscript")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorchExtra())
from udc_edge.cli import app
app(sys.argv[1:], prog_name="udc-edge")
"""


def run_without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``udc-edge ARGS`` in a fresh interpreter where the torch extra cannot be imported."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", PRELUDE, "--threads", "1", "-q", *args], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def device(tiny_restorer_dir, tmp_path_factory):
    """A bundle written with torch (the workstation side), and a folder for the device."""
    root = tmp_path_factory.mktemp("device")
    bundle = root / "tiny.tar.gz"
    write_bundle(str(tiny_restorer_dir), bundle, calib="synth:toled", calib_count=4, verify_count=2,
                 attacks=("pgd", "simba"))
    return root, bundle


@pytest.fixture(scope="module")
def engines(device):
    root, bundle = device
    for precision in ("fp32", "int8"):
        res = run_without_torch("build", "--bundle", str(bundle), "--precision", precision,
                                "--out", f"e-{precision}.onnx", cwd=root)
        assert res.returncode == 0, res.stderr
    return root


def test_the_blocked_import_is_real_and_torch_commands_name_the_extra(device, tmp_path):
    root, _ = device
    write_png(tmp_path / "a.png", np.full((16, 16, 3), 0.5, np.float32), bit_depth=8)
    res = run_without_torch("restore", "unet-s-poled", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"),
                            cwd=root)
    assert res.returncode == 1
    assert 'pip install "udc-edge[torch]"' in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_build_from_a_bundle_without_torch(engines):
    for precision in ("fp32", "int8"):
        engine = engines / f"e-{precision}.onnx"
        manifest = json.loads((engines / f"e-{precision}.onnx.json").read_text())
        assert engine.stat().st_size > 1000
        assert manifest["backend"] == "onnxruntime" and manifest["precision"] == precision
    ops = {p: {n.op_type for n in onnx.load(str(engines / f"e-{p}.onnx")).graph.node} for p in ("fp32", "int8")}
    assert "QuantizeLinear" in ops["int8"] and "QuantizeLinear" not in ops["fp32"]


def test_bench_engines_without_torch(engines):
    res = run_without_torch("bench", "e-fp32.onnx", "e-int8.onnx", "--shape", "1x3x32x32", "--iters", "3",
                            "--warmup", "1", "--report", "bench", cwd=engines)
    assert res.returncode == 0, res.stderr
    rep = json.loads((engines / "bench" / "bench.json").read_text())
    rows = {Path(r["name"]).name: r for r in rep["rows"]}
    assert set(rows) == {"e-fp32.onnx", "e-int8.onnx"}
    for name, r in rows.items():
        assert r["status"] == "ok" and r["latency_ms"]["p50"] > 0 and len(r["latency_ms"]["samples"]) == 3
        assert r["precision"] == name.split("-")[1].split(".")[0]
        assert r["peak_fraction"] is None  # the conv peak is a torch probe: not measured here
    assert "not measured" in (engines / "bench" / "bench.md").read_text()


def test_verify_a_bundle_without_torch_runs_the_blackbox_attack_on_the_engine(engines, device):
    _, bundle = device
    res = run_without_torch("verify", "--bundle", str(bundle), "--engine", "e-int8.onnx", "--report", "v",
                            cwd=engines)
    rep = json.loads((engines / "v" / "verify.json").read_text())
    assert res.returncode == (0 if rep["passed"] else 1), res.stderr
    checks = {c["name"]: c for c in rep["checks"]}
    assert checks["output fidelity vs reference (dB)"]["value"] > 30
    simba = [c for n, c in checks.items() if n.startswith("simba@8/255 black-box") and "PSNR" in n]
    assert len(simba) == 1
    # the engine was really attacked: its PSNR under SimBA is below its clean PSNR
    assert simba[0]["engine"] < checks["clean PSNR drop (dB)"]["engine"] - 0.1
    assert any("transferred" in n for n in checks)
    # rows crafted on the engine's replica need torch: reported as not run (never passed), saying why
    direct = [c for n, c in checks.items() if "white-box on engine" in n]
    assert direct and not rep["passed"] and all(not c["passed"] and "PyTorch" in json.dumps(c) for c in direct)


def test_eval_an_engine_with_blackbox_attacks_without_torch(engines):
    """A synthetic set made on the device, SimBA and Square on the engine; PGD refused in one line."""
    res = run_without_torch("data", "synth", "pairs", "--display", "toled", "--count", "2", "--size", "32",
                            "--seed", "5", cwd=engines)
    assert res.returncode == 0, res.stderr
    res = run_without_torch("eval", "e-int8.onnx", "--data", "pairs", "--attacks", "simba,square", "--eps", "8/255",
                            "--simba-iterations", "40", "--square-queries", "40", "--out", "eval", cwd=engines)
    assert res.returncode == 0, res.stderr
    rep = json.loads((engines / "eval" / "report.json").read_text())
    assert rep["model"]["source"] == "engine" and rep["environment"]["torch"] is None
    rows = {r["attack"]: r for r in rep["rows"]}
    assert set(rows) == {"simba", "square"}
    for r in rows.values():
        assert 0 < r["queries_mean"] <= 81 and r["psnr_mean"] < rep["clean"]["psnr_mean"]
    res = run_without_torch("eval", "e-int8.onnx", "--data", "pairs", "--attacks", "pgd", "--out", "eval-pgd",
                            cwd=engines)
    assert res.returncode == 2 and "needs gradients" in res.stderr and "--reference" in res.stderr
    assert not (engines / "eval-pgd").exists()


def test_restore_an_engine_without_torch_matches_the_torch_model(engines, tiny_restorer, tmp_path):
    """Odd sizes (host padding to the engine's multiple), 8- and 16-bit kept, tiled and whole."""
    import torch

    from udc_edge.evaluation.restore import restore_array

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:45, 0:37] / 40.0
    smooth = np.stack([np.sin(3 * yy + c) * np.cos(2 * xx - c) * 0.4 + 0.5 for c in range(3)], -1)
    imgs = {"odd8.png": (smooth, 8), "big16.png": (np.clip(rng.random((70, 66, 3)) * 0.3 + 0.3, 0, 1), 16)}
    src = tmp_path / "in"
    for name, (img, bits) in imgs.items():
        write_png(src / name, img.astype(np.float32), bit_depth=bits)
    for tile in ("0", "32"):
        out = tmp_path / f"out-{tile}"
        res = run_without_torch("restore", str(engines / "e-fp32.onnx"), str(src), "--out", str(out),
                                "--tile", tile, "--overlap", "8", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert "restored 2 image(s)" in res.stdout
        for name, (_, bits) in imgs.items():
            got, info = read_image(out / name)
            inp, _ = read_image(src / name)
            assert info.bit_depth == bits and got.shape == inp.shape
            with torch.no_grad():
                want = restore_array(tiny_restorer, inp, tile=int(tile), overlap=8)
            assert psnr(got, want) > 40, (name, tile)  # fp32 engine vs its torch model, after PNG rounding
