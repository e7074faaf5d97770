"""Restorer training: it learns, it is deterministic, it resumes exactly, it checks input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from udc_edge.core.errors import OutputError, UsageError
from udc_edge.models import load_checkpoint
from udc_edge.training.losses import restoration_loss
from udc_edge.training.pairs import make_train_data
from udc_edge.training.restorer import TrainSpec, train_restorer

TINY = {"arch": "unet-t", "data": "synth:toled", "batch": 4, "patch": 48, "pool": 6, "val_count": 2, "warmup": 5,
        "threads": 1, "device": "cpu"}


def _digest(run) -> str:
    return json.loads((run / "train_log.json").read_text())["weights_digests"][0]


def test_a_few_steps_lower_the_loss(tmp_path):
    data = make_train_data("synth:toled", 48, seed=99, pool=6)
    lq, gt = data.sampler.batch(np.random.default_rng(5), 8)
    torch.manual_seed(0)
    spec = TrainSpec(**TINY, steps=60, lr=3e-3, val_every=60, out=str(tmp_path / "run"))
    from udc_edge.models import create

    torch.manual_seed(spec.seed)
    before = restoration_loss(create("unet-t")(lq), gt).item()
    report = train_restorer(spec)
    model, cfg = load_checkpoint(tmp_path / "run" / "last")
    with torch.no_grad():
        after = restoration_loss(model(lq), gt).item()
    assert after < 0.8 * before
    assert report.history and cfg["metrics"]["step"] == 60
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()


def test_same_seed_same_weights_and_exact_resume(tmp_path):
    train_restorer(TrainSpec(**TINY, steps=6, val_every=3, out=str(tmp_path / "a")))
    train_restorer(TrainSpec(**TINY, steps=6, val_every=3, out=str(tmp_path / "b")))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    # Stop at step 3, resume to 6: the same weights as the uninterrupted run.
    train_restorer(TrainSpec(**TINY, steps=3, val_every=3, out=str(tmp_path / "c")))
    with pytest.raises(UsageError, match="--seed is 1 but the interrupted run used 0"):
        train_restorer(TrainSpec(**{**TINY, "seed": 1}, steps=6, val_every=3, out=str(tmp_path / "c"), resume=True))
    train_restorer(TrainSpec(**TINY, steps=6, val_every=3, out=str(tmp_path / "c"), resume=True))
    assert _digest(tmp_path / "c") == _digest(tmp_path / "a")
    resumed = json.loads((tmp_path / "c" / "train_log.json").read_text())["resumed"]
    assert resumed == {"from_step": 3, "changed": {"steps": [3, 6]}}
    train_restorer(TrainSpec(**{**TINY, "seed": 1}, steps=6, val_every=3, out=str(tmp_path / "d")))
    assert _digest(tmp_path / "d") != _digest(tmp_path / "a")


def test_existing_run_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="--resume"):
        train_restorer(TrainSpec(**TINY, steps=1, out=str(tmp_path / "run")))


def test_bad_specs_are_usage_errors():
    with pytest.raises(UsageError, match="--steps"):
        TrainSpec(steps=0)
    with pytest.raises(UsageError, match="contradict"):
        TrainSpec(resume=True, overwrite=True)
    with pytest.raises(UsageError, match="--patch"):
        make_train_data("synth:poled", 16, seed=0, pool=1)


def test_trains_from_a_paired_folder(tmp_path):
    from udc_edge.data.synth import SynthSpec, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "ds", SynthSpec(display="toled", count=4, size=48, source="deadleaves"))
    report = train_restorer(TrainSpec(**{**TINY, "data": str(tmp_path / "ds")}, steps=2, val_every=2,
                                      out=str(tmp_path / "run")))
    log = json.loads((tmp_path / "run" / "train_log.json").read_text())
    assert log["data"]["kind"] == "folder" and log["data"]["val_pairs"] == 1 and log["data"]["train_pairs"] == 3
    # the input PSNR is the held-out pair's lq-vs-gt PSNR, recomputed here from the files
    from udc_edge.data.readers import open_paired_dataset

    ds = open_paired_dataset(tmp_path / "ds")
    pair_psnr = [10 * np.log10(1 / np.mean((ds[i].lq.astype(np.float64) - ds[i].gt) ** 2)) for i in range(len(ds))]
    assert min(abs(report.input_psnr - p) for p in pair_psnr) < 1e-3, (report.input_psnr, pair_psnr)


def test_finetune_summary_warns_when_no_step_beat_the_starting_restorer():
    from udc_edge.training.finetune import FinetuneReport

    before = {"psnr": 27.12, "clean_psnr": 27.67}
    worse = FinetuneReport("run", 600, 1.0, before, {"psnr": 27.06, "clean_psnr": 27.35}, [])
    better = FinetuneReport("run", 600, 1.0, before, {"psnr": 27.30, "clean_psnr": 27.50}, [])
    assert "warning: no validation beat the restorer" in worse.summary()
    assert "warning" not in better.summary()
