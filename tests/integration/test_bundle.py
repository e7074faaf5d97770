"""Bundles: build and verify on a 'device' from the bundle alone; tampering is refused."""

from __future__ import annotations

import shutil
import tarfile
import tempfile

import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import DataError
from udc_edge.deploy.bundle import open_bundle, write_bundle

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tiny_restorer_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "tiny.tar.gz"
    write_bundle(str(tiny_restorer_dir), out, calib="synth:toled", calib_count=4, verify_count=2, attacks=("pgd",))
    return out


def test_device_builds_and_verifies_from_the_bundle(bundle, tmp_path, monkeypatch):
    with open_bundle(bundle) as b:
        assert {"model.onnx", "qdq-cpu.onnx", "qdq-tensorrt.onnx", "README.md"} <= {p.name for p in b.root.iterdir()}
        assert "udc-edge build --bundle" in (b.root / "README.md").read_text()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where build/verify unpack the .tar.gz
    res = runner.invoke(app, ["-q", "build", "--bundle", str(bundle), "--precision", "int8",
                              "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["-q", "verify", "--bundle", str(bundle), "--engine", str(tmp_path / "e.onnx"),
                              "--report", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    assert "PASS" in res.output and "transferred" in res.output
    assert not list(scratch.glob("udc-edge-bundle-*")), "build/verify left the unpacked bundle behind"


def test_closing_a_tarball_bundle_deletes_what_it_unpacked(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with open_bundle(bundle) as b:
        unpacked = b.unpacked
        assert unpacked is not None and (b.root / "bundle.json").is_file()
    assert not unpacked.exists()


def test_a_refused_tarball_leaves_nothing_unpacked(bundle, tmp_path, monkeypatch):
    work = tmp_path / "work"
    with open_bundle(bundle) as b:
        shutil.copytree(b.root, work / "tiny")
    (work / "tiny" / "qdq-cpu.onnx").write_bytes(b"tampered")
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        tf.add(work / "tiny", arcname="tiny")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(DataError, match="qdq-cpu.onnx does not match"):
        open_bundle(bad)
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="not a readable .tar.gz"):
        open_bundle(tmp_path / "junk.tar.gz")
    assert list(scratch.iterdir()) == []


def test_altered_or_missing_files_are_refused(bundle, tmp_path):
    root = tmp_path / "copy"
    with open_bundle(bundle) as b:
        shutil.copytree(b.root, root)
    (root / "qdq-cpu.onnx").write_bytes(b"tampered")
    with pytest.raises(DataError, match="qdq-cpu.onnx does not match"):
        open_bundle(root)
    (root / "model.onnx").unlink()
    with pytest.raises(DataError, match="missing model.onnx"):
        open_bundle(root)


def test_bundle_and_reference_are_exclusive(bundle, tmp_path):
    res = runner.invoke(app, ["verify", "--bundle", str(bundle), "--reference", "x",
                              "--engine", str(tmp_path / "e.onnx"), "--report", str(tmp_path / "v")])
    assert res.exit_code == 2 and "--bundle replaces" in res.output


def _folder_copy(bundle, tmp_path):
    root = tmp_path / "copy"
    with open_bundle(bundle) as b:
        shutil.copytree(b.root, root)
    return root


def _relist(root, edit):
    import json

    doc = json.loads((root / "bundle.json").read_text())
    edit(doc)
    (root / "bundle.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_bundle_listing_a_path_outside_itself_is_refused(bundle, tmp_path, kind):
    """bundle.json once could make verify read and hash ../../etc/hostname."""
    from udc_edge.core.fileio import sha256_file

    root = _folder_copy(bundle, tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("outside")
    name = {"dotdot": "../secret.txt", "absolute": str(outside), "symlink": "link.txt"}[kind]
    if kind == "symlink":
        (root / "link.txt").symlink_to(outside)
    _relist(root, lambda d: d["files"].update({name: sha256_file(outside)}))
    with pytest.raises(DataError, match="outside the bundle"):
        open_bundle(root)


def test_bundle_json_of_the_wrong_shape_and_truncated_tarball_are_one_line(bundle, tmp_path):
    root = _folder_copy(bundle, tmp_path)
    _relist(root, lambda d: d.update(files=sorted(d["files"])))  # a list instead of name -> sha256
    res = runner.invoke(app, ["build", "--bundle", str(root), "--out", str(tmp_path / "e.onnx")])
    assert res.exit_code == 1 and "'files'" in res.output and "Traceback" not in res.output, res.output
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    res = runner.invoke(app, ["build", "--bundle", str(cut), "--out", str(tmp_path / "e2.onnx")])
    assert res.exit_code == 1 and "not a readable .tar.gz" in res.output, res.output
    assert "Aborted" not in res.output
