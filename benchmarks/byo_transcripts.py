"""Re-run every command transcript of docs/byo.md and store what it printed.

    python benchmarks/byo_transcripts.py [--out benchmarks/results/byo]

Writes the weights the guide's set-up step writes (from ``tests/byo_obstacles.py``), then
runs each ``$ ...`` line of docs/byo.md in a scratch folder with ``PYTHONPATH=tests`` and
one thread, and writes ``transcripts.md`` (command, exit code, output) and
``transcripts.json``. The guide's excerpts (with ``...`` for elided lines) can be checked
against it; times in the output vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ("FFTNet", "UnfoldKPN", "TupleNet", "PsfCodeNet", "CudaNet", "FixedGridNet")


def commands(doc: Path) -> list[str]:
    """The ``$ ...`` lines of the guide's code blocks, in order."""
    return [m.group(1) for m in re.finditer(r"^\$ (.+)$", doc.read_text(), re.MULTILINE)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--doc", default=str(ROOT / "docs" / "byo.md"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "byo"))
    a = ap.parse_args()
    from udc_edge.core.fileio import atomic_dir

    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests"), "COLUMNS": "200", "NO_COLOR": "1"}
    records = []
    with tempfile.TemporaryDirectory(prefix="udc-edge-byo-") as work:
        setup = ("import torch\nfrom safetensors.torch import save_file\nimport byo_obstacles as b\n"
                 "from udc_edge.export.byo import cpu_only\n"
                 f"for name in {WEIGHTS!r}:\n    with cpu_only():\n        net = getattr(b, name)()\n"
                 "    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, f'{name}.safetensors')\n")
        subprocess.run([sys.executable, "-c", setup], cwd=work, env=env, check=True)
        for cmd in commands(Path(a.doc)):
            argv = shlex.split(cmd)
            if argv[0] == "udc-edge":  # one thread, as the guide says its outputs were made
                argv = [sys.executable, "-m", "udc_edge.cli", "--threads", "1", *argv[1:]]
            elif argv[0] == "python":
                argv[0] = sys.executable
            t0 = time.perf_counter()
            res = subprocess.run(argv, check=False, cwd=work, env=env, capture_output=True, text=True)
            records.append({"command": cmd, "exit_code": res.returncode, "seconds": time.perf_counter() - t0,
                            "output": (res.stdout + res.stderr).replace(work, ".").replace(f"{ROOT}/", "")})
            print(f"[{res.returncode}] {cmd}", flush=True)
    md = ["# docs/byo.md transcripts, re-run", "",
          f"`python benchmarks/byo_transcripts.py`, {time.strftime('%Y-%m-%d')}, 1 thread. Times vary.", ""]
    for r in records:
        md += [f"## `{r['command']}`", "", f"exit code {r['exit_code']}", "", "```", r["output"].rstrip(), "```", ""]
    with atomic_dir(a.out, overwrite=True) as tmp:
        (Path(tmp) / "transcripts.json").write_text(json.dumps(records, indent=2))
        (Path(tmp) / "transcripts.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
