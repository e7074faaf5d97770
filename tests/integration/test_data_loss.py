"""Never lose a user's files: each data-loss case of issue 15 through the CLI.

An output that is, holds or lies inside an input is refused even with --overwrite; an
existing output is refused without it; --overwrite replaces only folders udc-edge made;
restore is all or nothing, also when interrupted.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.data.images import write_png
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
from udc_edge.engines.build import build_engine
from udc_edge.engines.spec import BuildSpec

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
VERIFY_FAST = ["--steps", "1", "--attacks", "pgd", "--limit", "1"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) with its sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_onnx):
    """A dataset and an FP32 engine of the tiny restorer."""
    root = tmp_path_factory.mktemp("dataloss")
    write_synthetic_dataset(root / "ds", SynthSpec(display="toled", count=3, size=48, source="photos:test", seed=3))
    build_engine(tiny_onnx, root / "e.onnx", BuildSpec())
    return root


def invoke(*args: str):
    return runner.invoke(app, ["-q", *map(str, args)])


def test_verify_report_never_empties_a_folder_it_did_not_make(ws, tiny_restorer_dir, tmp_path, monkeypatch):
    base = ["verify", "--reference", tiny_restorer_dir, "--engine", ws / "e.onnx", "--data", ws / "ds", *VERIFY_FAST]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("x")
    res = invoke(*base, "--report", precious)
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = invoke(*base, "--report", precious, "--overwrite")
    assert res.exit_code == 1 and "not made by udc-edge" in res.output
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    for report in (ws / "ds", ws / "ds" / "reports", ws):  # is, lies inside, holds an input
        before = snapshot(ws)
        res = invoke(*base, "--report", report, "--overwrite")
        assert res.exit_code == 1 and "the input" in res.output, res.output
        assert snapshot(ws) == before
    monkeypatch.chdir(precious)
    res = invoke(*base, "--report", ".", "--overwrite")
    assert res.exit_code == 1 and "current folder" in res.output
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    res = invoke(*base, "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    first = (tmp_path / "rep" / "verify.json").read_text()
    res = invoke(*base, "--report", tmp_path / "rep", "--seed", "1")
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = invoke(*base, "--report", tmp_path / "rep", "--seed", "1", "--overwrite")  # its own folder: replaced
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "verify.json").read_text() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "rep"]


def test_restore_never_writes_over_or_around_its_inputs(ws, tiny_restorer_dir):
    before = snapshot(ws)
    for out in (ws / "ds" / "lq", ws / "ds", ws / "ds" / "lq" / "restored"):
        for extra in ([], ["--overwrite"]):
            res = invoke("restore", tiny_restorer_dir, ws / "ds" / "lq", "--out", out, *extra)
            assert res.exit_code == 1 and "the input" in res.output, res.output
    res = invoke("restore", tiny_restorer_dir, ws / "ds" / "lq", "--out", tiny_restorer_dir / "x", "--overwrite")
    assert res.exit_code == 1 and "the input" in res.output  # the model's folder is an input too
    assert snapshot(ws) == before


def test_two_inputs_with_one_output_name_are_refused(tmp_path, tiny_restorer_dir, rng):
    (tmp_path / "img").mkdir()
    img = rng.random((40, 40, 3)).astype(np.float32)
    write_png(tmp_path / "img" / "good.png", img, 8)
    from PIL import Image

    Image.open(tmp_path / "img" / "good.png").save(tmp_path / "img" / "good.jpg")
    res = invoke("restore", tiny_restorer_dir, tmp_path / "img" / "good.jpg", tmp_path / "img" / "good.png",
                 "--out", tmp_path / "o")
    assert res.exit_code == 1 and "both be written as good.png" in res.output
    assert not (tmp_path / "o").exists()


def test_restore_is_all_or_nothing(ws, tmp_path, tiny_restorer_dir):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        (src / name).write_bytes((ws / "ds" / "lq" / "0000.png").read_bytes())
    (src / "c.png").write_bytes((ws / "ds" / "lq" / "0001.png").read_bytes()[:2000])  # truncated third image
    res = invoke("restore", tiny_restorer_dir, src, "--out", tmp_path / "out")
    assert res.exit_code == 1 and "c.png" in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output folder, no temporary one
    (src / "c.png").unlink()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("k")
    assert invoke("restore", tiny_restorer_dir, src, "--out", mine).exit_code == 1
    assert invoke("restore", tiny_restorer_dir, src, "--out", mine, "--overwrite").exit_code == 1
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert invoke("restore", tiny_restorer_dir, src, "--out", tmp_path / "out").exit_code == 0
    res = invoke("restore", tiny_restorer_dir, src / "a.png", "--out", tmp_path / "out", "--overwrite")
    assert res.exit_code == 0, res.output  # its own earlier output: replaced as a whole
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["a.png"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_restore_leaves_no_output_and_no_temporary(tmp_path, tiny_restorer_dir, sig):
    src = tmp_path / "in"
    src.mkdir()
    img = np.random.default_rng(0).random((256, 256, 3)).astype(np.float32)
    for i in range(60):
        write_png(src / f"{i:02d}.png", img, 8)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "udc_edge.cli", "-q", "--threads", "1", "restore",
                             str(tiny_restorer_dir), str(src), "--out", str(tmp_path / "out")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:  # wait until outputs are being written
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
        if temps and len(list(temps[0].glob("*.png"))) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "restore finished before it could be interrupted"
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_overwrite_never_replaces_an_input(ws, tiny_restorer_dir):
    before = snapshot(ws)
    d = ws / "ds"
    cases = [
        ["attack", tiny_restorer_dir, "--data", d, "--out", d, "--eps", "8/255", "--steps", "1", "--limit", "1"],
        ["eval", tiny_restorer_dir, "--data", d, "--out", d, "--attacks", "pgd", "--steps", "1", "--limit", "1"],
        ["eval", tiny_restorer_dir, "--data", d, "--out", d / "lq", "--attacks", "pgd", "--steps", "1"],
        ["attack", tiny_restorer_dir, "--data", d, "--out", tiny_restorer_dir, "--eps", "8/255"],
        ["data", "synth", d, "--source", d / "lq", "--count", "1", "--size", "48"],
        ["data", "synth", d / "lq" / "more", "--source", d / "lq", "--count", "1", "--size", "48"],
    ]
    for args in cases:
        res = invoke(*args, "--overwrite")
        assert res.exit_code == 1 and "the input" in res.output, (args, res.output)
    assert snapshot(ws) == before


def test_export_build_bundle_refuse_to_replace_files(ws, tiny_restorer_dir, tiny_onnx, tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(tiny_onnx.read_bytes())
    eng = tmp_path / "eng.onnx"
    assert invoke("build", onnx, "--out", eng).exit_code == 0
    stale = eng.with_name("eng.onnx.json").read_text()
    engine_bytes = eng.read_bytes()
    res = invoke("export", tiny_restorer_dir, "--out", eng, "--height", "32", "--width", "32")
    assert res.exit_code == 1 and "--overwrite" in res.output
    assert eng.read_bytes() == engine_bytes and eng.with_name("eng.onnx.json").read_text() == stale
    for extra in ([], ["--overwrite"]):  # output = input: always refused
        res = invoke("build", onnx, "--out", onnx, *extra)
        assert res.exit_code == 1 and "is the input" in res.output
        assert onnx.read_bytes() == tiny_onnx.read_bytes()
    res = invoke("build", onnx, "--out", eng)
    assert res.exit_code == 1 and "--overwrite" in res.output and eng.read_bytes() == engine_bytes
    tar = tmp_path / "b.tar.gz"
    tar.write_bytes(b"an older bundle")
    res = invoke("bundle", "--restorer", tiny_restorer_dir, "--out", tar)
    assert res.exit_code == 1 and "--overwrite" in res.output and tar.read_bytes() == b"an older bundle"
    res = invoke("export", tiny_restorer_dir, "--out", eng, "--height", "32", "--width", "32", "--overwrite")
    assert res.exit_code == 0, res.output
    assert eng.read_bytes() != engine_bytes and not eng.with_name("eng.onnx.json").exists()  # no stale manifest
    # a user's own file that merely shares the sidecar name is not a manifest: it is kept
    notes = tmp_path / "fresh.onnx.json"
    notes.write_text('{"my": "notes"}')
    res = invoke("export", tiny_restorer_dir, "--out", tmp_path / "fresh.onnx", "--height", "32", "--width", "32")
    assert res.exit_code == 0, res.output
    assert notes.read_text() == '{"my": "notes"}'


def test_engine_and_manifest_are_one_unit(ws, tiny_onnx, tmp_path, monkeypatch):
    """A crash between the engine's and the manifest's rename (made by failing the second
    os.replace: a real kill cannot be timed there) leaves nothing loadable but wrong."""
    from udc_edge.core.errors import EngineError
    from udc_edge.engines import load_engine

    out = tmp_path / "e.onnx"
    real_replace, calls = os.replace, []

    def crash_on_manifest(src, dst):
        calls.append(dst)
        if str(dst).endswith(".onnx.json"):
            raise KeyboardInterrupt  # killed after the engine's rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        build_engine(tiny_onnx, out, BuildSpec())
    monkeypatch.setattr(os, "replace", real_replace)
    assert [Path(c).name for c in calls] == ["e.onnx", "e.onnx.json"]  # engine first, manifest last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx"]  # no temporaries either
    with pytest.raises(EngineError, match="no manifest"):
        load_engine(out)
    build_engine(tiny_onnx, out, BuildSpec(), overwrite=True)
    old_manifest = out.with_name("e.onnx.json").read_text()
    monkeypatch.setattr(os, "replace", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        build_engine(ws / "e.onnx", out, BuildSpec(precision="int8", calib=str(ws / "ds" / "lq"), calib_count=4),
                     overwrite=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert out.with_name("e.onnx.json").read_text() == old_manifest
    with pytest.raises(EngineError, match="does not match its manifest"):
        load_engine(out)  # the new engine beside the old manifest
