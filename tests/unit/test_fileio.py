"""The file-io guarantees every output relies on: atomic writes, the output check, umask
permissions, and leftovers of killed runs removed by the next run (never a live run's)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from udc_edge.core.errors import OutputError
from udc_edge.core.fileio import (
    MARKER,
    atomic_dir,
    atomic_path,
    atomic_paths,
    check_output,
    work_dir,
    write_bytes_atomic,
)

REPO = Path(__file__).resolve().parents[2]


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old complete file")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new but only ha")  # the writer dies midway
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_files_written_as_a_unit_change_nothing_if_one_fails(tmp_path):
    eng, man = tmp_path / "e.onnx", tmp_path / "e.onnx.json"
    eng.write_bytes(b"old engine")
    man.write_text("old manifest")
    with pytest.raises(RuntimeError), atomic_paths(eng, man) as (te, tm):
        te.write_bytes(b"new engine")
        raise RuntimeError("disk full while writing the manifest")
    assert eng.read_bytes() == b"old engine" and man.read_text() == "old manifest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.onnx", "e.onnx.json"]
    with atomic_paths(eng, man) as (te, tm):
        te.write_bytes(b"new engine")
        tm.write_text("new manifest")
    assert eng.read_bytes() == b"new engine" and man.read_text() == "new manifest"


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_outputs_honour_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        f = write_bytes_atomic(tmp_path / "f.bin", b"x")
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(old)
    assert f.stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_output_that_is_holds_or_lies_inside_an_input_is_refused_even_with_overwrite(tmp_path):
    data = tmp_path / "data"
    (data / "lq").mkdir(parents=True)
    (data / "lq" / "a.png").write_bytes(b"img")
    (tmp_path / "link").symlink_to(data)
    for out, how in [
        (data, "is"),
        (tmp_path / "link", "is"),
        (tmp_path, "holds"),
        (data / "lq" / "new", "lies inside"),
    ]:
        with pytest.raises(OutputError, match=f"{how} the input"):
            check_output(out, [data], overwrite=True)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"graph")
    os.link(onnx, tmp_path / "hard.onnx")
    for out in (onnx, tmp_path / "hard.onnx"):
        with pytest.raises(OutputError, match="is the input"):
            check_output(out, ["synth:poled", None, onnx], overwrite=True, kind="file")
    check_output(tmp_path / "fresh", [data, "unet-s-poled"])  # names that are not paths are not inputs


def test_current_folder_is_never_an_output(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    for out in (".", "..", str(tmp_path)):
        with pytest.raises(OutputError, match="current folder"):
            check_output(out, overwrite=True)


def test_overwrite_replaces_only_what_udc_edge_made(tmp_path):
    mine = tmp_path / "precious"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        check_output(mine)
    with pytest.raises(OutputError, match="not made by udc-edge"):
        check_output(mine, overwrite=True)
    with pytest.raises(OutputError, match="not made by udc-edge"), atomic_dir(mine, overwrite=True):
        pass
    assert (mine / "notes.txt").read_text() == "x"
    ours = tmp_path / "report"
    with atomic_dir(ours) as tmp:
        (tmp / "a.json").write_text("1")
    assert (ours / MARKER).is_file()
    check_output(ours, overwrite=True)
    with atomic_dir(ours, overwrite=True) as tmp:
        (tmp / "b.json").write_text("2")
    assert sorted(p.name for p in ours.iterdir()) == [MARKER, "b.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "report"]  # no temp, no old copy
    f = tmp_path / "e.onnx"
    f.write_bytes(b"e")
    with pytest.raises(OutputError, match="exists"):
        check_output(f, kind="file")
    check_output(f, overwrite=True, kind="file")


KILLED = """
import os, signal, sys
from udc_edge.core.fileio import atomic_dir, work_dir
with work_dir("calib") as w, atomic_dir(sys.argv[1]) as tmp:
    (w / "aug.onnx").write_bytes(b"x")
    (tmp / "half.png").write_bytes(b"y")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run_but_not_a_live_runs(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch)}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED), str(out)], env=env, check=False)
    assert res.returncode == -9
    left_out = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    left_calib = [p.name for p in scratch.iterdir() if p.name.startswith("udc-edge-calib-")]
    assert len(left_out) == 1 and len(left_calib) == 1  # what SIGKILL leaves
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / f".out.udc{live.pid}.abcdefgh.tmp").mkdir()  # a live run's temporaries
        (scratch / f"udc-edge-calib-{live.pid}-abcdefgh").mkdir()
        old = tmp_path / ".out.k2j4h5g6.tmp"  # an older udc-edge's, without PID, two days old
        old.mkdir()
        os.utime(old, (time.time() - 2 * 86400,) * 2)
        (tmp_path / ".out.notes.tmp").write_text("someone else's")  # not a name udc-edge makes
        monkeypatch.setattr("tempfile.tempdir", str(scratch))
        with work_dir("calib"), atomic_dir(out) as tmp:
            (tmp / "done.png").write_bytes(b"z")
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == sorted(
            [f".out.udc{live.pid}.abcdefgh.tmp", ".out.notes.tmp"])
        assert [p.name for p in scratch.iterdir()] == [f"udc-edge-calib-{live.pid}-abcdefgh"]
    finally:
        live.kill()
        live.wait()
