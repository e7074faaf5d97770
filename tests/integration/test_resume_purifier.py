"""`udc-edge distill --resume` and `udc-edge finetune --resume`: an interrupted run resumed to
the end has bit-identical weights to an uninterrupted one; bad resumes are refused.

Like the restorer trainer's test (tests/unit/test_training.py), a run of N/2 steps is
resumed to N with every step of the first half in the warm-up (so the learning rate does
not depend on the total); a run of N steps interrupted after its N/2 checkpoint and
resumed with the same options must match too.
"""

from __future__ import annotations

import json

import pytest
import torch
from interrupt import Interrupted, stop_after
from safetensors.torch import load_file
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.diffusion.purifier import Purifier, save_purifier
from udc_edge.models import create, save_checkpoint
from udc_edge.training.distill import DistillSpec, distill
from udc_edge.training.finetune import FinetuneSpec, finetune_restorer

runner = CliRunner()
N = 4  # steps; checkpoints (and resumable state) every N/2
DISTILL = {"k": 1, "batch": 2, "patch": 32, "pool": 2, "val_count": 1, "val_every": N // 2, "warmup": N,
           "lr": 2e-3, "data": "synth:toled", "threads": 1, "device": "cpu"}
FINETUNE = {"mix": ("clean", "purified", "adversarial"), "batch": 3, "patch": 32, "pool": 2, "val_count": 1,
            "val_every": N // 2, "warmup": N, "lr": 2e-3, "attack_steps": 1, "data": "synth:toled", "threads": 1,
            "device": "cpu"}


def same_weights(a, b) -> bool:
    wa, wb = load_file(str(a / "last" / "model.safetensors")), load_file(str(b / "last" / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def run_bytes(run) -> dict:
    """Every file of a run folder, by relative path: to check that nothing was written."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def log(run) -> dict:
    return json.loads((run / "train_log.json").read_text())


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """An (untrained) tiny teacher purifier and a tiny restorer checkpoint."""
    root = tmp_path_factory.mktemp("resume_models")
    torch.manual_seed(0)
    save_purifier(root / "teacher", Purifier(unet="purifier-t", t_star=0.1, steps=3, resolution=32, t_max=0.2))
    save_checkpoint(root / "restorer", create("unet-t"), {"arch": "unet", "kwargs": {"width": 4, "depth": 2,
                                                                                       "blocks": 1}})
    return root


@pytest.mark.parametrize("targets", [0, 4])
def test_distill_resumes_exactly(models, tmp_path, targets):
    spec = {**DISTILL, "teacher": str(models / "teacher"), "targets": targets}
    full = distill(DistillSpec(**spec, train_steps=N, out=str(tmp_path / "full")))
    assert log(tmp_path / "full")["resumed"] is None and (tmp_path / "full" / "state.safetensors").is_file()
    # N/2 steps, then resumed to N (the restorer trainer's test)
    distill(DistillSpec(**spec, train_steps=N // 2, out=str(tmp_path / "half")))
    resumed = distill(DistillSpec(**spec, train_steps=N, out=str(tmp_path / "half"), resume=True))
    assert same_weights(tmp_path / "half", tmp_path / "full")
    assert log(tmp_path / "half")["resumed"] == {"from_step": N // 2, "changed": {"train_steps": [N // 2, N]}}
    assert resumed.gap_before == full.gap_before and resumed.gap_after == full.gap_after
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history] == [0, N // 2, N]
    # N steps interrupted after the N/2 checkpoint, resumed with the same options
    with pytest.raises(Interrupted):
        distill(DistillSpec(**spec, train_steps=N, out=str(tmp_path / "cut")), progress=stop_after(N // 2))
    assert not (tmp_path / "cut" / "train_log.json").exists()
    distill(DistillSpec(**spec, train_steps=N, out=str(tmp_path / "cut"), resume=True))
    assert same_weights(tmp_path / "cut", tmp_path / "full")
    assert log(tmp_path / "cut")["resumed"] == {"from_step": N // 2, "changed": {}}


def test_finetune_resumes_exactly(models, tmp_path):
    spec = {**FINETUNE, "restorer": str(models / "restorer"), "purifier": str(models / "teacher")}
    full = finetune_restorer(FinetuneSpec(**spec, steps=N, out=str(tmp_path / "full")))
    finetune_restorer(FinetuneSpec(**spec, steps=N // 2, out=str(tmp_path / "half")))
    resumed = finetune_restorer(FinetuneSpec(**spec, steps=N, out=str(tmp_path / "half"), resume=True))
    assert same_weights(tmp_path / "half", tmp_path / "full")
    assert log(tmp_path / "half")["resumed"] == {"from_step": N // 2, "changed": {"steps": [N // 2, N]}}
    assert resumed.before == full.before and resumed.best["psnr"] == full.best["psnr"]
    assert [h["step"] for h in resumed.history] == [0, N // 2, N]
    with pytest.raises(Interrupted):
        finetune_restorer(FinetuneSpec(**spec, steps=N, out=str(tmp_path / "cut")), progress=stop_after(N // 2))
    finetune_restorer(FinetuneSpec(**spec, steps=N, out=str(tmp_path / "cut"), resume=True))
    assert same_weights(tmp_path / "cut", tmp_path / "full")
    assert log(tmp_path / "cut")["resumed"] == {"from_step": N // 2, "changed": {}}


def test_resume_with_other_options_is_refused(models, tmp_path):
    teacher, restorer = tmp_path / "teacher", str(models / "restorer")
    torch.manual_seed(0)
    save_purifier(teacher, Purifier(unet="purifier-t", t_star=0.1, steps=3, resolution=32, t_max=0.2))
    distill(DistillSpec(**DISTILL, teacher=str(teacher), train_steps=N // 2, out=str(tmp_path / "d")))
    distilled = run_bytes(tmp_path / "d")
    with pytest.raises(UsageError, match="--batch is 4 but the interrupted run used 2"):
        distill(DistillSpec(**{**DISTILL, "batch": 4}, teacher=str(teacher), train_steps=N,
                            out=str(tmp_path / "d"), resume=True))
    with pytest.raises(UsageError, match="TEACHER is"):
        distill(DistillSpec(**DISTILL, teacher=str(models / "teacher"), train_steps=N, out=str(tmp_path / "d"),
                            resume=True))
    torch.manual_seed(1)  # the same teacher path, other weights
    save_purifier(teacher, Purifier(unet="purifier-t", t_star=0.1, steps=3, resolution=32, t_max=0.2),
                  overwrite=True)
    with pytest.raises(UsageError, match="the teacher's weights"):
        distill(DistillSpec(**DISTILL, teacher=str(teacher), train_steps=N, out=str(tmp_path / "d"), resume=True))
    assert run_bytes(tmp_path / "d") == distilled
    finetune_restorer(FinetuneSpec(**FINETUNE, restorer=restorer, purifier=str(models / "teacher"), steps=N // 2,
                                   out=str(tmp_path / "f")))
    before = run_bytes(tmp_path / "f")
    with pytest.raises(UsageError, match="--mix"):
        finetune_restorer(FinetuneSpec(**{**FINETUNE, "mix": ("clean", "purified")}, restorer=restorer,
                                       purifier=str(models / "teacher"), steps=N, out=str(tmp_path / "f"),
                                       resume=True))
    assert run_bytes(tmp_path / "f") == before  # a refused resume writes nothing


def test_every_trainer_refuses_resume_with_overwrite_or_without_state(models, tmp_path):
    tiny = ["--data", "synth:toled", "--patch", "32", "--pool", "2", "--val-count", "1", "--threads", "1"]
    distill_cmd = ["distill", str(models / "teacher"), "--train-steps", "2", "--batch", "2", *tiny]
    finetune_cmd = ["finetune", str(models / "restorer"), "--purifier", str(models / "teacher"), "--steps", "2",
                    "--batch", "2", *tiny]
    train_cmd = ["train", "restorer", "--arch", "unet-t", "--steps", "2", "--batch", "2", *tiny]
    purifier_cmd = ["train", "purifier", "--unet", "purifier-t", "--steps", "2", "--batch", "2", *tiny]
    for i, cmd in enumerate((distill_cmd, finetune_cmd, train_cmd, purifier_cmd)):
        out = tmp_path / f"run{i}"
        res = runner.invoke(app, [*cmd, "--out", str(out), "--resume", "--overwrite"])
        assert res.exit_code == 2 and "--resume and --overwrite contradict" in res.output, res.output
        res = runner.invoke(app, [*cmd, "--out", str(out), "--resume"])
        assert res.exit_code == 1 and "no training state" in res.output, res.output
        assert not out.exists() or not any(out.iterdir())


def test_finetune_resume_refuses_a_purifier_changed_in_place_and_a_torn_checkpoint(models, tmp_path):
    import shutil

    from udc_edge.core.errors import ModelError
    from udc_edge.diffusion.purifier import load_purifier

    shutil.copytree(models / "teacher", tmp_path / "pur")
    spec = {**FINETUNE, "restorer": str(models / "restorer"), "purifier": str(tmp_path / "pur")}
    finetune_restorer(FinetuneSpec(**spec, steps=N // 2, out=str(tmp_path / "run")))
    pur, _ = load_purifier(tmp_path / "pur")  # same path, other setting (what `configure --overwrite` does)
    save_purifier(tmp_path / "pur", Purifier(**{**pur.config(), "average": 2}), overwrite=True)
    with pytest.raises(UsageError, match="the purifier's settings"):
        finetune_restorer(FinetuneSpec(**spec, steps=N, out=str(tmp_path / "run"), resume=True))
    shutil.rmtree(tmp_path / "pur")
    shutil.copytree(models / "teacher", tmp_path / "pur")
    cfg_path = tmp_path / "run" / "last" / "config.json"  # a run killed between last/ and its state
    cfg = json.loads(cfg_path.read_text())
    cfg["training"]["step"] += 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="stopped while saving"):
        finetune_restorer(FinetuneSpec(**spec, steps=N, out=str(tmp_path / "run"), resume=True))
