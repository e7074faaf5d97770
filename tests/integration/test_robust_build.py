"""`build --calib-adversarial` and `--exclude auto:robust`: attacked calibration images,
clean and attacked fidelity for every choice, one-line refusals of bad budgets/attacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from udc_edge.calibration.adversarial import craft, parse_calib_adversarial
from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.engines.build import build_engine
from udc_edge.engines.replica import OnnxReplica
from udc_edge.engines.spec import BuildSpec

runner = CliRunner()


def test_adversarial_calibration_adds_attacked_images_and_reports_both_fidelities(tiny_onnx, tmp_path):
    out = tmp_path / "rob.onnx"
    rep = build_engine(tiny_onnx, out, BuildSpec(precision="int8", calib="synth:toled", calib_count=6, calib_size=48,
                                                 calib_adversarial="pgd:8/255:3", auto_exclude=True,
                                                 robust_exclude=True, min_fidelity=99.0, threads=1))
    cal = rep.calibration
    assert cal["adversarial"]["attack"] == "pgd" and cal["used"] == 2 * (cal["count"] - cal["held_out"])
    assert rep.attacked_fidelity_db is not None and rep.fidelity_db is not None
    # 99 dB cannot be met: every exclusion tried is listed with its clean and attacked fidelity
    assert len(rep.choices) >= 2 and all(c["attacked_db"] is not None and c["clean_db"] for c in rep.choices)
    assert "worse of clean and attacked" in rep.excluded[0]["reason"]
    assert "attacked" in rep.summary()
    man = json.loads((tmp_path / "rob.onnx.json").read_text())
    assert man["build_options"]["calib_adversarial"] == "pgd:8/255:3" and man["build_options"]["robust_exclude"]
    assert man["summary"]["attacked_fidelity_db"] == pytest.approx(rep.attacked_fidelity_db)
    # a plain build of the same model calibrates on clean images only: other ranges, other hash
    plain = build_engine(tiny_onnx, tmp_path / "plain.onnx", BuildSpec(precision="int8", calib="synth:toled",
                                                                        calib_count=6, calib_size=48, threads=1))
    assert plain.calibration["cache"]["calib_sha256"] != cal["cache"]["calib_sha256"]
    assert plain.attacked_fidelity_db is None


def test_crafted_calibration_images_stay_in_budget_and_change_the_output(tiny_onnx, rng):
    spec = parse_calib_adversarial("pgd:4/255:3")
    model = OnnxReplica.from_file(tiny_onnx).eval()
    x = rng.uniform(0.1, 0.9, (2, 3, 32, 32)).astype(np.float32)
    adv = craft(model, x, spec)
    assert np.abs(adv - x).max() <= 4 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    import torch

    with torch.no_grad():
        y, ya = model(torch.from_numpy(x)), model(torch.from_numpy(adv))
    assert float((y - ya).abs().mean()) > 1e-3


@pytest.mark.parametrize("bad,msg", [("cw:8/255", "ATTACK:EPS"), ("pgd", "ATTACK:EPS"), ("pgd:9", "outside"),
                                     ("pgd:x/255", "not a number"), ("pgd:8/255:0", "steps"),
                                     ("square:8/255", "ATTACK:EPS")])
def test_bad_calib_adversarial_is_one_line_exit_2(tiny_onnx, tmp_path, bad, msg):
    with pytest.raises(UsageError, match=msg):
        parse_calib_adversarial(bad)
    out = tmp_path / "e.onnx"
    res = runner.invoke(app, ["build", str(tiny_onnx), "--precision", "int8", "--calib", "synth:toled",
                              "--calib-adversarial", bad, "--out", str(out)])
    assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output, res.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_robust_options_refused_where_they_do_not_apply(tiny_onnx, tmp_path):
    cases = [["--exclude", "auto:fast", "--precision", "int8", "--calib", "synth:toled"],
             ["--calib-adversarial", "pgd:8/255"],  # fp32: nothing is calibrated
             ["--exclude", "auto:robust"]]
    for extra in cases:
        res = runner.invoke(app, ["build", str(tiny_onnx), "--out", str(tmp_path / "e.onnx"), *extra])
        assert res.exit_code == 2 and "Traceback" not in res.output, (extra, res.output)
    assert not list(tmp_path.iterdir())


def test_openvino_robust_build_uses_the_same_exclusion_search(tiny_onnx, tmp_path):
    """OpenVINO/NNCF INT8: --calib-adversarial adds attacked calibration images and auto:robust ranks
    layers by the shared ``layer_sensitivity`` (worse of clean and attacked); every choice shows both."""
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out = tmp_path / "rob.xml"
    rep = build_engine(tiny_onnx, out, BuildSpec(backend="openvino", precision="int8", calib="synth:toled",
                                                 calib_count=6, calib_size=48, calib_adversarial="pgd:8/255:3",
                                                 auto_exclude=True, robust_exclude=True, min_fidelity=99.0,
                                                 threads=1))
    cal = rep.calibration
    assert cal["adversarial"]["attack"] == "pgd" and cal["used"] == 2 * (cal["count"] - cal["held_out"])
    assert rep.attacked_fidelity_db is not None
    assert len(rep.choices) >= 2 and all(c["attacked_db"] is not None for c in rep.choices)
    assert rep.excluded and "worse of clean and attacked" in rep.excluded[0]["reason"]
    man = json.loads((tmp_path / "rob.xml.json").read_text())
    assert man["build_options"]["robust_exclude"] and man["summary"]["choices"] == rep.choices
