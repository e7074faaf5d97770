"""Purifier training on a CUDA GPU (torch only, no TensorRT).

Marked ``cuda``; skipped unless torch sees a CUDA device. The batches, timesteps and noise
are drawn on the CPU, so a GPU run follows the CPU run's trajectory up to floating-point
differences (TF32 convolutions, other reduction orders): its losses must stay close.
"""

from __future__ import annotations

import json

import pytest
import torch

from udc_edge.diffusion.purifier import load_purifier
from udc_edge.training.purifier import PurifierTrainSpec, train_purifier

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda)")]

TINY = {"unet": "purifier-t", "data": "synth:toled", "batch": 4, "patch": 32, "pool": 3, "val_count": 1,
        "val_every": 3, "steps": 6, "t_max": 0.2, "t_star": 0.1, "threads": 1}


def test_cuda_run_follows_the_cpu_run_and_its_checkpoint_loads_on_the_cpu(tmp_path):
    train_purifier(PurifierTrainSpec(**TINY, device="cpu", out=str(tmp_path / "cpu")))
    train_purifier(PurifierTrainSpec(**TINY, device="cuda", workers=2, out=str(tmp_path / "gpu")))
    cpu = json.loads((tmp_path / "cpu" / "train_log.json").read_text())
    gpu = json.loads((tmp_path / "gpu" / "train_log.json").read_text())
    assert gpu["device"] != "cpu" and cpu["device"] == "cpu"
    for a, b in zip(cpu["history"], gpu["history"], strict=True):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.05), (a, b)
    purifier, _ = load_purifier(tmp_path / "gpu" / "last")
    x = torch.rand(1, 3, 32, 32)
    y = purifier(x, torch.randn_like(x))
    assert y.device.type == "cpu" and y.shape == x.shape and torch.isfinite(y).all()
