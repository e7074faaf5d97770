"""docs/api.md's example runs as written, and the public API is reachable from the top level
without importing torch until a call needs it."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/api.md should hold exactly one runnable python block"
    return blocks[0]


def test_api_doc_example_runs(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + _example()],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "robustness parity: PASS" in r.stdout
    diff = float(re.search(r"max abs difference: (\S+)", r.stdout).group(1))
    assert diff < 1e-3, r.stdout


def test_import_udc_edge_is_cheap_and_exposes_the_api():
    code = ("import sys, udc_edge; assert 'torch' not in sys.modules, 'import udc_edge pulled in torch'; "
            "names = ['load_model', 'restore', 'attack', 'build', 'load_engine', 'bench', 'verify']; "
            "from udc_edge import api; assert all(getattr(udc_edge, n) is getattr(api, n) for n in names); "
            "import udc_edge.export; assert callable(api.export) and udc_edge.export.__name__ == 'udc_edge.export'")
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
