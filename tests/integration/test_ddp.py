"""DistributedDataParallel on CPU: two torchrun processes (gloo) end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_ranks_train_to_identical_weights(tmp_path):
    out = tmp_path / "run"
    cmd = [
        # --standalone: torchrun picks its own free port (a port probed here could be taken
        # by another process before torchrun binds it)
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "udc_edge.cli", "-q", "train", "restorer", "--arch", "unet-t", "--data", "synth:toled",
        "--steps", "4", "--batch", "2", "--patch", "48", "--pool", "4", "--val-every", "4",
        "--val-count", "1", "--threads", "1", "--device", "cpu", "--out", str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    log = json.loads((out / "train_log.json").read_text())
    assert log["ranks"] == 2
    assert len(log["weights_digests"]) == 2 and log["ranks_identical"] is True
    assert (out / "best" / "model.safetensors").exists()
