"""Bundles: build and verify on a 'device' from the bundle alone; tampering is refused."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.errors import DataError
from udc_edge.evaluation.bundle import open_bundle, write_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tiny_restorer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "tiny.tar.gz"
    write_bundle(str(tiny_restorer_dir), out, calib="synth:toled", calib_count=4, verify_count=2, attacks=("pgd",))
    return out


def test_device_builds_and_verifies_from_the_bundle(bundle, tmp_path):
    b = open_bundle(bundle)
    assert {"model.onnx", "qdq-cpu.onnx", "qdq-tensorrt.onnx", "README.md"} <= {p.name for p in b.root.iterdir()}
    assert "udc-edge build --bundle" in (b.root / "README.md").read_text()
    res = runner.invoke(app, ["-q", "build", "--bundle", str(bundle), "--precision", "int8", "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["-q", "verify", "--bundle", str(bundle), "--engine", str(tmp_path / "e.onnx"),
                              "--report", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "transferred" in res.output


def test_altered_or_missing_files_are_refused(bundle, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(open_bundle(bundle).root, root)
    (root / "qdq-cpu.onnx").write_bytes(b"tampered")
    with pytest.raises(DataError, match="qdq-cpu.onnx does not match"):
        open_bundle(root)
    (root / "model.onnx").unlink()
    with pytest.raises(DataError, match="missing model.onnx"):
        open_bundle(root)


def test_bundle_and_reference_are_exclusive(bundle, tmp_path):
    res = runner.invoke(app, ["verify", "--bundle", str(bundle), "--reference", "x", "--engine", str(tmp_path / "e.onnx"),
                              "--report", str(tmp_path / "v")])
    assert res.exit_code == 2 and "--bundle replaces" in res.output
