"""A full disk (ENOSPC) while writing any output: one line, exit 1, nothing half-written.

The disks are real: small tmpfs mounts in a private mount namespace (``unshare -rm``),
filled by the command itself. Skipped where unprivileged namespaces are not allowed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from udc_edge.data.synth import SynthSpec, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]


def _can_mount_tmpfs(tmp: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    (tmp / "probe").mkdir()
    res = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {tmp / 'probe'}"],
                         capture_output=True, check=False)
    return res.returncode == 0


SCRIPT = """
import json, sys
from pathlib import Path
from typer.testing import CliRunner
from udc_edge.cli import app
from udc_edge.core.errors import OutputError
from udc_edge.core.fileio import write_bytes_atomic

small, fit, keep = map(Path, sys.argv[1:4])
ckpt, onnx, ds = sys.argv[4:7]
cases = {
    "export": ["export", ckpt, "--out", str(small / "m.onnx"), "--height", "32", "--width", "32"],
    "build": ["build", onnx, "--out", str(fit / "e.onnx")],
    "synth": ["data", "synth", str(small / "ds"), "--count", "2", "--size", "48"],
    "restore": ["restore", ckpt, ds, "--out", str(small / "restored")],
}
res = {}
runner = CliRunner()
for name, args in cases.items():
    r = runner.invoke(app, ["-q", *args])
    res[name] = {"code": r.exit_code, "output": r.output, "exc": repr(r.exception),
                 "left": sorted(p.name for d in (small, fit) for p in d.iterdir())}
(keep / "old.bin").write_bytes(b"o" * 8000)
try:
    write_bytes_atomic(keep / "old.bin", b"n" * 200_000)
    res["atomic"] = "written"
except OutputError as exc:
    res["atomic"] = {"error": str(exc), "old_intact": (keep / "old.bin").read_bytes() == b"o" * 8000,
                     "left": sorted(p.name for p in keep.iterdir())}
print("RESULT" + json.dumps(res))
"""


def test_disk_full_anywhere_leaves_nothing_and_prints_one_line(tmp_path, tiny_restorer_dir, tiny_onnx):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs in a user namespace here (unshare -rm)")
    write_synthetic_dataset(tmp_path / "data", SynthSpec(display="toled", count=2, size=48, seed=1))
    dirs = [tmp_path / n for n in ("small", "fit", "keep")]
    for d in dirs:
        d.mkdir()
    fit_kb = 4 * math.ceil(tiny_onnx.stat().st_size / 4096)  # room for the engine, none for its manifest
    mounts = " && ".join(
        f"mount -t tmpfs -o size={kb}k tmpfs {d}" for d, kb in zip(dirs, (16, fit_kb, 64), strict=True)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    cmd = (f"{mounts} && {sys.executable} {script} {' '.join(map(str, dirs))} {tiny_restorer_dir} {tiny_onnx} "
           f"{tmp_path / 'data' / 'lq'}")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", cmd], env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert "RESULT" in proc.stdout, proc.stdout + proc.stderr
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in ("export", "build", "synth", "restore"):
        r = res[name]
        assert r["code"] == 1, (name, r)
        lines = r["output"].strip().splitlines()
        assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in r["output"], (name, r)
        assert r["left"] == [], (name, r)  # no output, no temporary, no engine without manifest
    assert res["atomic"]["old_intact"] and res["atomic"]["left"] == ["old.bin"], res["atomic"]
