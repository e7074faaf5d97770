"""The one training loop (udc_edge.training.trainer): exact resume, best/ by the hook's
metric and direction, the --device and --weight-decay options of every trainer, and the
one train_log.json format that all four trainers write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from interrupt import Interrupted, stop_after
from safetensors.torch import load_file
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.diffusion.purifier import Purifier, save_purifier
from udc_edge.models import build, create, save_checkpoint
from udc_edge.training import trainer as T
from udc_edge.training.distill import DistillSpec, distill
from udc_edge.training.finetune import FinetuneSpec, finetune_restorer
from udc_edge.training.purifier import PurifierTrainSpec, train_purifier
from udc_edge.training.restorer import TrainSpec, train_restorer
from udc_edge.training.state import load_state, options

runner = CliRunner()
UNET_T = {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}}
COMMON = {"data": "synth:toled", "pool": 2, "val_count": 1, "threads": 1, "device": "cpu", "warmup": 2}


class L1Trainer(T.Trainer):
    """A trainer written only against the hooks: L1 loss, best/ by the *lowest* validation L1."""

    kind, metric, higher_is_better = "toy", "val_l1", False
    must_match = options("seed", "batch")

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        model = build(UNET_T["arch"], UNET_T["kwargs"]).to(self.device)
        return model, model

    def prepare(self, data: Any) -> None:
        lq, gt = data.val[0]
        self.vx, self.vy = (torch.from_numpy(a.transpose(2, 0, 1).copy())[None, :, :32, :32] for a in (lq, gt))

    def loss(self, batch: Any, net: torch.nn.Module) -> torch.Tensor:
        lq, gt = T.to_device(self.device, *batch[:2])
        return F.l1_loss(net(lq), gt)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        self.model.eval()
        return {"val_l1": float(F.l1_loss(self.model(self.vx), self.vy))}

    def save_model(self, folder: Path, extra: dict[str, Any]) -> None:
        save_checkpoint(folder, self.model, UNET_T, extra, overwrite=True)


@dataclass
class ToyReport:
    best_val_l1: float


def toy_run(out: Path, steps: int = 6, progress=T.noop, **kw: Any) -> T.TrainResult:
    spec = TrainSpec(**{"arch": "unet-t", "batch": 2, "patch": 32, "steps": steps, "val_every": 2, "lr": 5e-3,
                        "out": str(out), **COMMON, **kw})
    trainer = L1Trainer(spec, T.LoopSpec.of(spec), progress)
    result = trainer.run()
    trainer.write_log(ToyReport(result.best.get("val_l1", 0.0)))
    return result


def weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / which / "model.safetensors"))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def test_an_interrupted_run_resumed_equals_the_uninterrupted_run(tmp_path):
    full = toy_run(tmp_path / "full")
    with pytest.raises(Interrupted):  # stops during step 4: the last checkpoint is step 2's
        toy_run(tmp_path / "cut", progress=stop_after(3))
    assert load_state(tmp_path / "cut" / "state.safetensors")["step"] == 2
    resumed = toy_run(tmp_path / "cut", resume=True)
    assert same(weights(tmp_path / "cut"), weights(tmp_path / "full"))
    assert same(weights(tmp_path / "cut", "best"), weights(tmp_path / "full", "best"))
    assert no_seconds(resumed.history) == no_seconds(full.history) and [h["step"] for h in full.history] == [2, 4, 6]
    assert resumed.resumed == {"from_step": 2, "changed": {}} and full.resumed is None
    # the weights did move, and another seed moves them elsewhere
    torch.manual_seed(0)
    assert not same(weights(tmp_path / "full"), build(UNET_T["arch"], UNET_T["kwargs"]).state_dict())
    toy_run(tmp_path / "seed1", seed=1)
    assert not same(weights(tmp_path / "seed1"), weights(tmp_path / "full"))


def test_best_follows_the_hooks_metric_and_direction(tmp_path):
    result = toy_run(tmp_path / "run")
    values = [h["val_l1"] for h in result.history]
    assert len(set(values)) == 3  # the direction decides which one is best
    assert (
        result.best["val_l1"] == min(values)
        and result.best["step"] == result.history[values.index(min(values))]["step"]
    )
    best_cfg = json.loads((tmp_path / "run" / "best" / "config.json").read_text())
    assert best_cfg["metrics"]["step"] == result.best["step"]
    assert json.loads((tmp_path / "run" / "train_log.json").read_text())["best"] == result.best


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory) -> Path:
    """A tiny CPU run of each trainer, with its default weight decay."""
    root = tmp_path_factory.mktemp("four")
    torch.manual_seed(0)
    save_purifier(root / "teacher", Purifier(unet="purifier-t", t_star=0.1, steps=2, resolution=32, t_max=0.2))
    save_checkpoint(root / "rst", create("unet-t"), UNET_T)
    train_restorer(TrainSpec(arch="unet-t", batch=2, patch=32, steps=2, val_every=1, out=str(root / "restorer"),
                             **COMMON))
    train_purifier(PurifierTrainSpec(unet="purifier-t", batch=2, patch=32, steps=2, val_every=1,
                                     out=str(root / "purifier"), **COMMON))
    distill(DistillSpec(teacher=str(root / "teacher"), batch=2, train_steps=2, val_every=1, out=str(root / "distill"),
                        **COMMON))
    finetune_restorer(FinetuneSpec(restorer=str(root / "rst"), purifier=str(root / "teacher"), batch=2, patch=32,
                                   steps=2, val_every=1, out=str(root / "finetune"), **COMMON))
    return root


KINDS = {"restorer": ("psnr", True, 1e-4), "purifier": ("val_loss", False, 0.0), "distill": ("gap_mse", False, 0.0),
         "finetune": ("psnr", True, 1e-4)}


def test_all_four_trainers_write_the_one_log_format(four_runs):
    keys = {"format", "kind", "spec", "data", "out", "steps", "seconds", "metric", "best", "history", "resumed",
            "ranks", "ranks_identical", "weights_digests", "device", "torch", "threads", "report"}
    for kind, (metric, higher, _) in KINDS.items():
        log = json.loads((four_runs / kind / "train_log.json").read_text())
        assert set(log) == keys, (kind, set(log) ^ keys)
        assert log["format"] == T.LOG_FORMAT and log["kind"] == kind and log["device"] == "cpu"
        assert log["metric"] == {"name": metric, "higher_is_better": higher}
        assert log["steps"] == 2 and log["ranks"] == 1 and log["ranks_identical"] is True
        assert [h["step"] for h in log["history"] if h["step"] > 0] == [1, 2]
        assert all({"step", "loss", "seconds", metric} <= set(h) for h in log["history"] if h["step"] > 0)
        pick = max if higher else min
        scored = [h for h in log["history"] if h["step"] > 0]
        assert log["best"] == pick(scored, key=lambda h: h[metric]), kind
        assert json.loads((four_runs / kind / "best" / "config.json").read_text())["metrics"] == log["best"]


def test_weight_decay_is_an_option_with_the_old_defaults(four_runs, tmp_path):
    for kind, (_, _, decay) in KINDS.items():
        groups = load_state(four_runs / kind / "state.safetensors")["optimizer"]["param_groups"]
        assert [g["weight_decay"] for g in groups] == [decay], kind
    spec = {"arch": "unet-t", "batch": 2, "patch": 32, "steps": 2, "val_every": 2, **COMMON}
    train_restorer(TrainSpec(**spec, weight_decay=0.5, out=str(tmp_path / "wd")))
    train_restorer(TrainSpec(**spec, out=str(tmp_path / "default")))
    groups = load_state(tmp_path / "wd" / "state.safetensors")["optimizer"]["param_groups"]
    assert groups[0]["weight_decay"] == 0.5
    assert not same(weights(tmp_path / "wd"), weights(tmp_path / "default"))
    with pytest.raises(UsageError, match="--weight-decay must be >= 0"):
        TrainSpec(weight_decay=-1.0)


def test_every_trainer_passes_its_device_to_the_loop(monkeypatch, four_runs, tmp_path):
    """--device reaches the process-group setup of all four (a GPU run is tests/gpu's)."""
    seen: list[str] = []

    def record(device: str) -> Any:
        seen.append(device)
        raise Interrupted

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(T.D, "init_distributed", record)
    specs = [TrainSpec(device="cuda:1", out=str(tmp_path / "a")),
             PurifierTrainSpec(device="cuda:1", out=str(tmp_path / "b")),
             DistillSpec(teacher=str(four_runs / "teacher"), device="cuda:1", out=str(tmp_path / "c")),
             FinetuneSpec(restorer="x", purifier="y", device="cuda:1", out=str(tmp_path / "d"))]
    for spec, run in zip(specs, (train_restorer, train_purifier, distill, finetune_restorer), strict=True):
        with pytest.raises(Interrupted):
            run(spec)
    assert seen == ["cuda:1"] * 4
    for bad in ("gpu", "cuda:x", "cpu:0"):
        with pytest.raises(UsageError, match="--device must be auto, cpu, cuda or cuda:N"):
            DistillSpec(teacher="t", device=bad)


TINY_ARGS = ["--batch", "2", "--patch", "32", "--pool", "1", "--val-count", "1"]


@pytest.mark.parametrize("argv", [
    ["train", "restorer", "--arch", "unet-t", "--steps", "1", *TINY_ARGS],
    ["train", "purifier", "--unet", "purifier-t", "--steps", "1", *TINY_ARGS],
    ["distill", "TEACHER", "--train-steps", "1", *TINY_ARGS],
    ["finetune", "RESTORER", "--purifier", "TEACHER", "--steps", "1", *TINY_ARGS],
])
def test_every_training_command_refuses_cuda_without_a_gpu_and_writes_nothing(monkeypatch, four_runs, tmp_path, argv):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [str(four_runs / "teacher") if a == "TEACHER" else str(four_runs / "rst") if a == "RESTORER" else a
            for a in argv]
    out = tmp_path / "run"
    res = runner.invoke(app, ["-q", *argv, "--data", "synth:toled", "--device", "cuda", "--out", str(out)])
    assert res.exit_code == 2 and "sees no CUDA GPU" in res.output, res.output
    assert not out.exists()
    res = runner.invoke(app, ["-q", *argv, "--workers", "-1", "--out", str(out)])
    assert res.exit_code == 2 and "--workers must be >= 0" in res.output, res.output


def test_finetune_with_workers_has_bit_identical_weights(four_runs, tmp_path):
    """The finetune hook draws PGD and purifier seeds from the step's rng after the batch:
    batches made by a worker process must leave it where the in-process draw does."""
    spec = {"restorer": str(four_runs / "rst"), "purifier": str(four_runs / "teacher"), "batch": 2, "patch": 32,
            "steps": 2, "val_every": 2, "mix": ("purified", "adversarial"), "attack_steps": 1, **COMMON}
    finetune_restorer(FinetuneSpec(**spec, out=str(tmp_path / "a")))
    finetune_restorer(FinetuneSpec(**spec, workers=1, out=str(tmp_path / "b")))
    assert same(weights(tmp_path / "a"), weights(tmp_path / "b"))
