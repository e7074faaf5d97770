"""Training on a chosen device with batches made ahead by worker processes.

``--workers N`` must not change what a run computes: the batches (and the noise seeds drawn
after them) are a function of (seed, step, rank) alone, so a run with workers ends with
bit-identical weights to one without. ``--device`` is checked before anything is written.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.diffusion.purifier import Purifier
from udc_edge.training import distributed as D
from udc_edge.training.pairs import SynthPairs, step_batches
from udc_edge.training.purifier import PurifierTrainSpec, train_purifier

runner = CliRunner()
TINY = {"unet": "purifier-t", "data": "synth:toled", "batch": 2, "patch": 32, "pool": 3, "val_count": 1,
        "val_every": 2, "steps": 4, "t_max": 0.2, "t_star": 0.1, "threads": 1, "device": "cpu"}


def test_worker_batches_equal_in_process_batches_and_leave_the_rng_where_it_would_be():
    sampler = SynthPairs("toled", 32, pool=3, seed=0)
    mine = list(step_batches(sampler, 5, 0, 2, range(3, 7)))
    theirs = list(step_batches(sampler, 5, 0, 2, range(3, 7), workers=2))
    assert len(mine) == len(theirs) == 4
    for (lq_a, gt_a, rng_a), (lq_b, gt_b, rng_b) in zip(mine, theirs, strict=True):
        assert torch.equal(lq_a, lq_b) and torch.equal(gt_a, gt_b)
        assert rng_a.integers(2**62) == rng_b.integers(2**62)  # the trainer's next draw
    assert not torch.equal(mine[0][0], mine[1][0])  # and the steps differ


def test_purifier_run_with_workers_has_bit_identical_weights(tmp_path):
    train_purifier(PurifierTrainSpec(**TINY, out=str(tmp_path / "a")))
    train_purifier(PurifierTrainSpec(**TINY, workers=2, out=str(tmp_path / "b")))
    wa = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    torch.manual_seed(0)  # the run's own initialisation: the weights did move
    init = Purifier(**PurifierTrainSpec(**TINY).purifier_kwargs()).state_dict()
    assert any(not torch.equal(wa[k], init[k]) for k in wa)


def test_resolve_device_names_the_option_and_the_fix(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert D.resolve_device("auto") == "cpu"
    assert D.resolve_device("cpu") == "cpu"
    with pytest.raises(UsageError, match="--device cuda: torch .* sees no CUDA GPU") as err:
        D.resolve_device("cuda")
    assert "--device cpu" in err.value.hint
    for bad in ("gpu", "cuda:x", "cpu:0", ""):
        with pytest.raises(UsageError, match="--device must be auto, cpu, cuda or cuda:N"):
            D.resolve_device(bad)


def test_train_purifier_cli_refuses_cuda_without_a_gpu_and_writes_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    res = runner.invoke(app, ["-q", "train", "purifier", "--unet", "purifier-t", "--steps", "2", "--batch", "2",
                              "--data", "synth:toled", "--patch", "32", "--pool", "2", "--val-count", "1",
                              "--device", "cuda", "--out", str(out)])
    assert res.exit_code == 2 and "sees no CUDA GPU" in res.output, res.output
    assert not out.exists()
    res = runner.invoke(app, ["-q", "train", "purifier", "--workers", "-1", "--out", str(out)])
    assert res.exit_code == 2 and "--workers must be >= 0" in res.output, res.output

