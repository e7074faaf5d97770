"""The import-layering contract ([tool.importlinter] in pyproject.toml) holds: no package
imports one above it and no package's modules import each other in a cycle, counting
function-local imports. Runs import-linter itself, so `pytest` catches what CI's
`lint-imports` would."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
    return subprocess.run(
        [exe, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_layering_contract_is_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_contract_catches_an_upward_function_local_import(tmp_path):
    """A copy of the package with core importing a higher layer inside a function fails."""
    shutil.copytree(ROOT / "udc_edge", tmp_path / "udc_edge", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    timing = tmp_path / "udc_edge" / "core" / "timing.py"
    timing.write_text(
        timing.read_text() + "\n\ndef _planted():\n    from udc_edge.engines import load_engine  # noqa: F401\n"
    )
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert "udc_edge.core is not allowed to import udc_edge.engines" in r.stdout
