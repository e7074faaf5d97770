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


def test_every_trainer_runs_on_cuda_and_follows_its_cpu_run(tmp_path):
    """`--device cuda` for the restorer, distill and finetune trainers (the one Trainer moves
    their models, batches and validation inputs); their checkpoints load on the CPU."""
    from udc_edge.diffusion.purifier import Purifier, save_purifier
    from udc_edge.models import create, load_checkpoint, save_checkpoint
    from udc_edge.training.distill import DistillSpec, distill
    from udc_edge.training.finetune import FinetuneSpec, finetune_restorer
    from udc_edge.training.restorer import TrainSpec, train_restorer

    torch.manual_seed(0)
    save_purifier(tmp_path / "teacher", Purifier(unet="purifier-t", t_star=0.1, steps=2, resolution=32, t_max=0.2))
    unet_t = {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}}
    save_checkpoint(tmp_path / "rst", create("unet-t"), unet_t)
    common = {"data": "synth:toled", "batch": 4, "pool": 3, "val_count": 1, "threads": 1, "warmup": 2,
              "val_every": 3}
    runs = {
        "restorer": (lambda d, o: train_restorer(TrainSpec(arch="unet-t", patch=32, steps=6, out=o, device=d,
                                                           **common)), "psnr"),
        "distill": (lambda d, o: distill(DistillSpec(teacher=str(tmp_path / "teacher"), train_steps=6, out=o,
                                                     device=d, **common)), "gap_mse"),
        "finetune": (lambda d, o: finetune_restorer(FinetuneSpec(
            restorer=str(tmp_path / "rst"), purifier=str(tmp_path / "teacher"), patch=32, steps=6, out=o,
            mix=("clean", "purified", "adversarial"), attack_steps=1, device=d, **common)), "psnr"),
    }
    for kind, (run, metric) in runs.items():
        for device in ("cpu", "cuda"):
            run(device, str(tmp_path / f"{kind}-{device}"))
        cpu = json.loads((tmp_path / f"{kind}-cpu" / "train_log.json").read_text())
        gpu = json.loads((tmp_path / f"{kind}-cuda" / "train_log.json").read_text())
        assert gpu["device"] != "cpu" and cpu["device"] == "cpu", kind
        for a, b in zip(cpu["history"], gpu["history"], strict=True):
            assert b[metric] == pytest.approx(a[metric], rel=0.05), (kind, a, b)
        model, _ = load_checkpoint(tmp_path / f"{kind}-cuda" / "last")
        assert all(p.device.type == "cpu" for p in model.parameters()), kind
