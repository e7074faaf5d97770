"""`udc-edge train purifier`, `distill`, `finetune`, `purifier tune|table` through the CLI, tiny."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.diffusion.purifier import Purifier, save_purifier
from udc_edge.models import create, save_checkpoint

runner = CliRunner()
TINY_DATA = ["--data", "synth:toled", "--patch", "32", "--pool", "2", "--val-count", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny restorer checkpoint, a teacher trained by the CLI and a student distilled by it."""
    root = tmp_path_factory.mktemp("purifier_cli")
    torch.manual_seed(0)
    save_checkpoint(
        root / "restorer", create("unet-t"), {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}}
    )
    res = runner.invoke(app, ["-q", "train", "purifier", "--unet", "purifier-t", "--steps", "3", "--batch", "2",
                              "--val-every", "3", "--sample-steps", "3", "--out", str(root / "teacher"), *TINY_DATA])
    assert res.exit_code == 0, res.output
    assert "validation denoising loss" in res.output
    res = runner.invoke(app, ["-q", "distill", str(root / "teacher"), "--steps", "1", "--train-steps", "2",
                              "--batch", "2", "--val-every", "2", "--out", str(root / "k1"), *TINY_DATA])
    assert res.exit_code == 0, res.output
    assert "1-step student from the 3-step teacher" in res.output
    return root


def test_trained_and_distilled_checkpoints_describe_themselves(runs):
    teacher = json.loads((runs / "teacher" / "best" / "config.json").read_text())
    student = json.loads((runs / "k1" / "best" / "config.json").read_text())
    assert teacher["arch"] == "udc_edge.diffusion.purifier:Purifier" and teacher["kwargs"]["role"] == "teacher"
    assert teacher["kwargs"]["domain"] == "lq" and teacher["kwargs"]["resolution"] == 32
    assert student["kwargs"]["role"] == "student" and student["kwargs"]["steps"] == 1
    assert student["kwargs"]["distillation"]["teacher_t_star"] == teacher["kwargs"]["t_star"]
    assert student["kwargs"]["distillation"]["teacher_steps"] == 3


def test_finetune_cli_runs_on_tiny_models(runs):
    out = runs / "ft"
    res = runner.invoke(app, ["-q", "finetune", str(runs / "restorer"), "--purifier", str(runs / "k1"),
                              "--mix", "clean,purified,adversarial", "--steps", "2", "--batch", "3",
                              "--attack-steps", "1", "--val-every", "2", "--out", str(out), *TINY_DATA])
    assert res.exit_code == 0, res.output
    assert "fine-tuned 2 steps" in res.output
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["arch"] == "unet" and cfg["training"]["spec"]["mix"] == ["clean", "purified", "adversarial"]
    log = json.loads((out / "train_log.json").read_text())
    hist = log["history"]
    assert len(hist) == 2  # validation before training (step 0) and at --val-every 2
    before = log["report"]["before"]
    # "before" is the starting restorer's validation, recorded as the first history entry
    assert before == {k: v for k, v in hist[0].items() if k not in ("step", "seconds")} and hist[0]["step"] == 0
    # PSNRs of [0, 1] images on a degraded set lie in a plausible band (a wrong data range lands outside it)
    assert all(3 < before[k] < 50 for k in ("psnr", "clean_psnr", "input_psnr")), before
    assert log["best"]["psnr"] == max(h["psnr"] for h in hist)


def test_finetune_to_the_original_restorers_output_starts_at_its_clean_loss(runs):
    """--target restorer: on clean inputs the target IS the restorer's output, so a
    clean-only fine-tune starts with zero loss and stays near the original weights."""
    out = runs / "ft-consistency"
    res = runner.invoke(app, ["-q", "finetune", str(runs / "restorer"), "--purifier", str(runs / "k1"),
                              "--mix", "clean", "--target", "restorer", "--ssim-weight", "0", "--fft-weight", "0",
                              "--steps", "2", "--batch", "2", "--val-every", "2", "--out", str(out), *TINY_DATA])
    assert res.exit_code == 0, res.output
    from udc_edge.models.zoo import load_model

    before, after = load_model(str(runs / "restorer"))[0], load_model(str(out / "last"))[0]
    # zero loss -> zero gradient; only AdamW's weight decay moves the weights
    for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    res = runner.invoke(app, ["finetune", str(runs / "restorer"), "--purifier", str(runs / "k1"),
                              "--target", "teacher", "--out", str(runs / "ft-bad-target")])
    assert res.exit_code == 2 and "--target 'teacher' is unknown" in res.output


def test_finetune_refuses_bad_options_and_writes_nothing(runs):
    out = runs / "ft-bad"
    res = runner.invoke(app, ["finetune", str(runs / "restorer"), "--purifier", str(runs / "k1"),
                              "--mix", "clean,purifed", "--out", str(out)])
    assert res.exit_code == 2 and "unknown: purifed" in res.output
    res = runner.invoke(app, ["finetune", str(runs / "restorer"), "--purifier", str(runs / "restorer"),
                              "--steps", "1", "--out", str(out), *TINY_DATA])
    assert res.exit_code == 1 and "not a diffusion purifier" in res.output
    assert not out.exists()


def test_tune_writes_plot_and_json(runs):
    out = runs / "tune"
    res = runner.invoke(app, ["-q", "purifier", "tune", "--restorer", str(runs / "restorer"), "--purifier",
                              str(runs / "teacher"), "--data", "synth:toled", "--count", "1", "--size", "32",
                              "--attack-steps", "1", "--draws", "1", "--t-stars", "0.05,0.1", "--max-drop", "100",
                              "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "tune.json").read_text())
    assert [r["t_star"] for r in rep["rows"]] == [0.05, 0.1] and rep["chosen"] in (0.05, 0.1)
    assert (out / "tune.png").read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, ["purifier", "tune", "--restorer", str(runs / "restorer"), "--purifier",
                              str(runs / "k1"), "--out", str(out)])
    assert res.exit_code == 2 and "teacher" in res.output


def test_table_refuses_a_student_of_another_t_star(runs):
    teacher = Purifier(unet="purifier-t", t_star=0.15, steps=3)
    save_purifier(runs / "teacher15", teacher)
    res = runner.invoke(app, ["purifier", "table", "--restorer", str(runs / "restorer"), "--teacher",
                              str(runs / "teacher15"), "--student", str(runs / "k1"), "--data", "synth:toled",
                              "--count", "1", "--size", "32", "--out", str(runs / "table")])
    assert res.exit_code == 1 and "distilled at t* = 0.1" in res.output
    assert not (runs / "table").exists()


def test_table_has_cw_and_simba_columns_for_short_samplers(runs):
    out = runs / "table-full"
    res = runner.invoke(app, ["-q", "purifier", "table", "--restorer", str(runs / "restorer"), "--teacher",
                              str(runs / "teacher"), "--student", str(runs / "k1"), "--data", "synth:toled",
                              "--count", "1", "--size", "32", "--attack-steps", "2", "--eot", "2", "--draws", "1",
                              "--simba-iterations", "5", "--out", str(out), "--threads", "1", "--attack-batch", "1"])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "defence.json").read_text())
    assert table["spec"]["attack_batch"] == 1
    rows = {r["name"]: r for r in table["rows"]}
    assert set(rows["restorer"]["others"]) == {"cw non-adaptive", "simba black-box"}
    student = rows["+ student k=1"]["others"]
    assert student["simba black-box"]["queries"] > 0 and student["cw non-adaptive"]["l2"] > 0
    teacher = rows["+ teacher (3 steps)"]
    assert teacher["others"]["simba black-box"] is not None  # 3 steps <= 4: queried, not skipped
    md = (out / "defence.md").read_text()
    assert "C&W-L2 non-adaptive" in md and "SimBA black-box" in md


def test_eval_with_purifier_writes_one_defence_table_per_budget(runs, tmp_path, monkeypatch):
    from udc_edge.attacks import api

    cw_runs = []
    real_cw = api.cw_l2
    monkeypatch.setattr(api, "cw_l2", lambda *a, **k: cw_runs.append(1) or real_cw(*a, **k))
    teacher50 = Purifier(unet="purifier-t", t_star=0.1, steps=8)
    save_purifier(tmp_path / "teacher8", teacher50)
    out = tmp_path / "eval"
    res = runner.invoke(app, ["-q", "eval", str(runs / "restorer"), "--purifier", str(tmp_path / "teacher8"),
                              "--data", "synth:toled", "--limit", "1", "--size", "32", "--attacks", "pgd,simba,cw",
                              "--cw-search-steps", "1", "--cw-max-iter", "2",
                              "--eps", "4/255,8/255", "--steps", "2", "--eot", "2", "--draws", "1",
                              "--simba-iterations", "3", "--out", str(out), "--threads", "1"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    assert [t["spec"]["eps"] for t in rep["tables"]] == pytest.approx([4 / 255, 8 / 255])
    assert len(cw_runs) == 1  # C&W has no eps: crafted once on the restorer for both budgets
    row = rep["tables"][1]["rows"][1]
    assert row["adaptive_kind"].startswith("BPDA through the 8-step teacher")
    assert row["others"]["simba black-box"] is None and "8-step purifier" in row["skipped"]["simba black-box"]
    res = runner.invoke(app, ["eval", str(runs / "restorer"), "--purifier", str(tmp_path / "teacher8"),
                              "--data", "synth:toled", "--objective", "clean", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "ground truth" in res.output and not (tmp_path / "bad").exists()


def test_configure_freezes_a_setting_with_the_same_weights(runs):
    out = runs / "oneshot"
    res = runner.invoke(app, ["purifier", "configure", str(runs / "teacher"), "--t-star", "0.05", "--steps", "1",
                              "--average", "4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    from udc_edge.diffusion.purifier import load_purifier

    new, _ = load_purifier(out)
    old, _ = load_purifier(runs / "teacher")
    assert (new.t_star, new.steps, new.average, new.role) == (0.05, 1, 4, "teacher")
    assert all(torch.equal(a, b) for a, b in zip(new.state_dict().values(), old.state_dict().values(), strict=True))
    res = runner.invoke(app, ["purifier", "configure", str(runs / "k1"), "--t-star", "0.05", "--out",
                              str(runs / "bad")])
    assert res.exit_code == 2 and "distilled for" in res.output and not (runs / "bad").exists()
    res = runner.invoke(app, ["purifier", "configure", str(runs / "teacher"), "--average", "9", "--out",
                              str(runs / "bad")])
    assert res.exit_code == 2 and "average" in res.output and not (runs / "bad").exists()


def test_defended_evaluation_refuses_bad_options_before_attacking(runs, tmp_path):
    from udc_edge.core.errors import UsageError
    from udc_edge.defence.defence import DefenceSpec

    res = runner.invoke(app, ["eval", str(runs / "restorer"), "--purifier", str(runs / "k1"), "--data", "synth:toled",
                              "--eps", ",", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "gives no budget" in res.output
    res = runner.invoke(app, ["eval", str(runs / "restorer"), "--purifier", str(runs / "k1"), "--data", "synth:toled",
                              "--limit", "0", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "--limit 0" in res.output
    res = runner.invoke(app, ["purifier", "table", "--restorer", str(runs / "restorer"), "--finetuned-purifier",
                              str(runs / "k1"), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "needs --finetuned" in res.output
    with pytest.raises(UsageError, match="square_queries"):
        DefenceSpec(attacks="pgd,square", square_queries=1)
    assert not (tmp_path / "e").exists() and not (tmp_path / "t").exists()
