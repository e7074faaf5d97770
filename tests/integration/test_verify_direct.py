"""White-box attacks on the engine's own numerics in `verify`: a deliberately fragile INT8
engine fails them while passing the clean rows; rows are labelled crafted-on/evaluated-on;
rows that cannot run are "not run", never "passed"."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from udc_edge.calibration.qdq import quantize_bytes
from udc_edge.calibration.ranges import compute_ranges
from udc_edge.data.images import write_png
from udc_edge.data.readers import open_paired_dataset
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
from udc_edge.deploy.reference import VerifySpec, make_reference_set
from udc_edge.deploy.verify import verify_engine
from udc_edge.deploy.verify_direct import engine_replica
from udc_edge.engines import load_engine
from udc_edge.engines.manifest import Manifest, write_manifest
from udc_edge.engines.ort import get_version
from udc_edge.export.onnx_export import ExportSpec, export_onnx

CLIP = 0.5  # every verification pixel is <= CLIP; many sit exactly at it
GAIN = 4.0


class CancellingPair(nn.Module):
    """out = x + relu(G x) - relu(G x): the identity in float, built from two branches
    that cancel. Quantised with the subtracted branch's range clipped at the clean maximum
    (G * CLIP) and the added one left wide, clean inputs never saturate, but a pixel an
    attack pushes above CLIP saturates the subtracted branch only, and the output moves
    (G + 1) times as far as the push (the test images are brighter than their ground truth
    there, so pushing up is what an attacker wants)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 1, bias=False), nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(GAIN * torch.eye(3)[:, :, None, None])
            self.b.weight.copy_(GAIN * torch.eye(3)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.a(x)) - torch.relu(self.b(x))


def _engine(model: nn.Module, tmp_path, calib: np.ndarray, clip: bool):
    onnx_path = tmp_path / "pair.onnx"
    export_onnx(model, onnx_path, ExportSpec(height=32, width=32, parity_images=1))
    ranges = compute_ranges(onnx_path, calib, method="minmax")
    conv_a = next(k for k in ranges if "/a/" in k)
    conv_b = next(k for k in ranges if "/b/" in k)
    ranges["input"] = [0.0, 1.0]  # attacked pixels reach the branches
    ranges[conv_a] = [0.0, GAIN * 1.0]
    ranges[conv_b] = [0.0, GAIN * (CLIP if clip else 1.0)]  # the deliberately fragile range
    path = tmp_path / ("fragile.onnx" if clip else "sound.onnx")
    data = quantize_bytes(onnx_path, ranges, "cpu")
    path.write_bytes(data)
    write_manifest(path, Manifest("onnxruntime", get_version(), "int8", "int8", hashlib.sha256(data).hexdigest()))
    return path


@pytest.fixture(scope="module")
def dimmed(tmp_path_factory):
    """Paired UDC images with the degraded side capped at CLIP (a bright region sits at it)."""
    root = tmp_path_factory.mktemp("dim")
    write_synthetic_dataset(root / "src", SynthSpec(display="toled", count=2, size=32, source="photos:test", seed=5))
    src = open_paired_dataset(root / "src")
    for sub in ("lq", "gt"):
        (root / "ds" / sub).mkdir(parents=True)
    for i in range(len(src)):
        p = src[i]
        lq = np.minimum(p.lq * 1.4, CLIP)
        write_png(root / "ds" / "lq" / f"{i}.png", lq, 16)
        write_png(root / "ds" / "gt" / f"{i}.png", p.gt, 16)
    return open_paired_dataset(root / "ds")


def _verify(path, dimmed, spec):
    model = CancellingPair().eval()
    rs = make_reference_set(model, dimmed, spec)
    eng = load_engine(path)
    replica, why = engine_replica(path, eng.manifest)
    with eng:
        rep, _ = verify_engine(eng, rs, spec, replica=replica, no_replica=why)
    return {c.name: c for c in rep.checks}, rep


def test_fragile_engine_fails_direct_rows_but_passes_clean_ones(dimmed, tmp_path):
    spec = VerifySpec(attacks=("pgd",), steps=5, limit=2)
    calib = np.stack([dimmed[i].lq for i in range(len(dimmed))]).transpose(0, 3, 1, 2).astype(np.float32)
    model = CancellingPair().eval()
    rows, rep = _verify(_engine(model, tmp_path, calib, clip=True), dimmed, spec)
    assert rows["output fidelity vs reference (dB)"].passed and rows["clean PSNR drop (dB)"].passed
    assert rows["replica match vs engine, clean (dB)"].passed
    direct = rows["pgd@8/255 white-box on engine PSNR drop (dB)"]
    assert direct.run and not direct.passed and direct.value > 1.0, direct
    assert rep.verdict == "FAIL"
    # the same graph with branch 1's range left wide passes every row
    rows, rep = _verify(_engine(model, tmp_path, calib, clip=False), dimmed, spec)
    assert rep.verdict == "PASS", [(c.name, c.value) for c in rep.checks if not c.passed]
    assert rows["pgd@8/255 white-box on engine PSNR drop (dB)"].run


def test_rows_are_labelled_and_unrepresentable_engine_is_not_run(tiny_onnx, tiny_restorer_dir, tmp_path):
    from typer.testing import CliRunner

    from udc_edge.cli import app
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.spec import BuildSpec

    write_synthetic_dataset(tmp_path / "ds", SynthSpec(display="toled", count=2, size=48, source="photos:test", seed=5))
    build_engine(tiny_onnx, tmp_path / "int8.onnx", BuildSpec(precision="int8", calib="synth:toled", calib_count=4,
                                                              calib_size=48, threads=1))
    args = ["-q", "verify", "--reference", str(tiny_restorer_dir), "--data", str(tmp_path / "ds"), "--attacks",
            "pgd,simba", "--steps", "3", "--simba-iterations", "10", "--limit", "2"]
    res = CliRunner().invoke(app, [*args, "--engine", str(tmp_path / "int8.onnx"), "--report", str(tmp_path / "r")])
    doc = json.loads((tmp_path / "r" / "verify.json").read_text())
    by = {c["name"]: c for c in doc["checks"]}
    assert by["pgd@8/255 transferred PSNR drop (dB)"]["crafted_on"] == "reference / reference"
    assert by["pgd@8/255 white-box on engine PSNR drop (dB)"]["crafted_on"] == "reference / engine replica"
    assert by["simba@8/255 black-box on each PSNR drop (dB)"]["crafted_on"] == "reference / engine (queries)"
    assert all(c["evaluated_on"] and c["crafted_on"] for c in doc["checks"])
    assert by["replica match vs engine, clean (dB)"]["value"] >= 50, res.output
    md = (tmp_path / "r" / "verify.md").read_text()
    assert "| crafted on | evaluated on |" in md and "engine replica" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == len(doc["checks"]) + 2 and all(line.count("|") == 9 for line in table)  # no stray pipes
    # an engine whose graph holds an op the replica cannot represent: rows not run, verdict not PASS
    import onnx
    from onnx import helper

    m = onnx.load(str(tmp_path / "int8.onnx"))
    out = m.graph.output[0].name
    m.graph.node.append(helper.make_node("Softsign", [out], ["soft"]))
    m.graph.node.append(helper.make_node("Sub", ["soft", "soft"], ["zero"]))
    m.graph.node.append(helper.make_node("Add", [out, "zero"], ["final"]))
    m.graph.output[0].name = "final"
    data = m.SerializeToString()
    (tmp_path / "odd.onnx").write_bytes(data)
    from dataclasses import replace

    from udc_edge.engines.manifest import read_manifest

    write_manifest(tmp_path / "odd.onnx", replace(read_manifest(tmp_path / "int8.onnx"),
                                                   engine_sha256=hashlib.sha256(data).hexdigest()))
    res = CliRunner().invoke(app, [*args, "--engine", str(tmp_path / "odd.onnx"), "--report", str(tmp_path / "r2")])
    assert res.exit_code == 1, res.output
    doc = json.loads((tmp_path / "r2" / "verify.json").read_text())
    direct = [c for c in doc["checks"] if "white-box on engine" in c["name"]]
    assert direct and all(c["result"] == "not run" and not c["passed"] and "Softsign" in c["note"] for c in direct)
    assert doc["verdict"] == "INCOMPLETE" and "Softsign" in res.output
    # --no-direct leaves them out (and says nothing failed)
    res = CliRunner().invoke(app, [*args, "--engine", str(tmp_path / "odd.onnx"), "--report", str(tmp_path / "r3"),
                                   "--no-direct"])
    assert res.exit_code == 0, res.output
