"""`udc-edge bench`: statistics, interleaving, overhead, comparisons, Jetson parsing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.deploy.bench import BenchRow, BenchSpec, _fill, measure_overhead, run_bench
from udc_edge.deploy.bench_compare import compare_reports, ratio_interval, verdict
from udc_edge.deploy.hostinfo import parse_tegrastats_power_mw
from udc_edge.engines.build import build_engine
from udc_edge.engines.spec import BuildSpec

runner = CliRunner()


@pytest.fixture(scope="module")
def engine(tiny_onnx, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "e.onnx"
    build_engine(tiny_onnx, path, BuildSpec())
    return path


def test_bench_engine_and_model_side_by_side(engine, tiny_restorer_dir):
    rep = run_bench([str(engine), str(tiny_restorer_dir)], BenchSpec(shape=(1, 3, 64, 64), iters=6, warmup=1,
                                                                    threads=1, profile=True))
    onnx_row, torch_row = rep.rows
    assert (onnx_row.backend, torch_row.backend) == ("onnxruntime", "torch")
    for r in rep.rows:
        lat = r.latency_ms
        assert r.status == "ok" and len(r.samples) == 6
        assert lat["min"] <= lat["p50"] <= lat["max"]
        assert lat["p90"] is None and lat["p99"] is None  # 6 rounds: no tail percentiles
        assert r.images_per_s == pytest.approx(1000 / lat["mean"], rel=1e-6)
        assert r.gflops and r.gflops > 0 and 0 < r.peak_fraction
    top = onnx_row.top_layers
    assert top and all(t["ms"] > 0 and t["op"] and 0 < t["share"] <= 1 for t in top)
    assert [t["ms"] for t in top] == sorted((t["ms"] for t in top), reverse=True)  # the slowest first
    assert "| layer | op | ms | share |" in rep.to_markdown()


def test_harness_overhead_is_under_one_percent_of_a_10ms_call():
    import numpy as np

    us = measure_overhead(np.zeros((1, 3, 512, 512), np.float32))
    assert us < 100, f"harness overhead {us:.1f} us is over 1 % of a 10 ms engine call"


def test_a_broken_target_is_a_row_not_a_crash(engine):
    rep = run_bench([str(engine), "missing.onnx"], BenchSpec(shape=(1, 3, 32, 32), iters=2, warmup=0))
    assert rep.rows[0].status == "ok" and rep.rows[1].status.startswith("error:")


def _with_samples(rep, samples):
    """The report's JSON with its one row's raw samples (and stats) replaced."""
    import numpy as np

    doc = json.loads(rep.to_json())
    lat = doc["rows"][0]["latency_ms"]
    lat.update(samples=list(samples), p50=float(np.median(samples)), mean=float(np.mean(samples)),
               std=float(np.std(samples)))
    return doc


def test_compare_verdicts_come_from_raw_samples(engine, tmp_path):
    import numpy as np

    rep = run_bench([str(engine)], BenchSpec(shape=(1, 3, 32, 32), iters=25, warmup=0))
    new = np.asarray(rep.rows[0].samples)
    (tmp_path / "fast.json").write_text(json.dumps(_with_samples(rep, new / 10)))  # the old run was 10x faster
    notes = compare_reports(rep, tmp_path / "fast.json")
    assert rep.rows[0].verdict == "regression" and "regression" in notes[0] and "interval" in notes[0]
    (tmp_path / "slow.json").write_text(json.dumps(_with_samples(rep, new * 10)))
    compare_reports(rep, tmp_path / "slow.json")
    assert rep.rows[0].verdict == "improvement"
    (tmp_path / "few.json").write_text(json.dumps(_with_samples(rep, (new / 10)[:10])))  # 10 rounds: too few
    notes = compare_reports(rep, tmp_path / "few.json")
    assert rep.rows[0].verdict == "inconclusive" and ">= 20" in notes[0]
    with pytest.raises(UsageError, match="bench.json"):
        compare_reports(rep, tmp_path / "nope.json")


def test_compare_refuses_another_shape_and_flags_another_precision(engine, tmp_path):
    rep = run_bench([str(engine)], BenchSpec(shape=(1, 3, 32, 32), iters=20, warmup=0))
    doc = _with_samples(rep, rep.rows[0].samples)
    doc["spec"]["shape"] = [1, 3, 48, 48]
    (tmp_path / "other.json").write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="1x3x48x48"):
        compare_reports(rep, tmp_path / "other.json")
    doc["spec"]["shape"], doc["rows"][0]["precision"] = [1, 3, 32, 32], "int8"
    (tmp_path / "int8.json").write_text(json.dumps(doc))
    notes = compare_reports(rep, tmp_path / "int8.json")
    assert rep.rows[0].verdict == "not comparable" and "int8" in notes[0]


def test_bootstrap_verdicts_on_known_distributions():
    import numpy as np

    rng = np.random.default_rng(0)
    base = rng.normal(10, 0.2, 40)
    assert verdict(*ratio_interval(base, rng.normal(10, 0.2, 40))[1:]) == "same"
    assert verdict(*ratio_interval(base, rng.normal(12, 0.2, 40))[1:]) == "regression"
    assert verdict(*ratio_interval(base, rng.normal(8, 0.2, 40))[1:]) == "improvement"
    # +-70 % noise around a 10 % slow-down: no verdict can be honest
    noisy = rng.normal(10, 7, 20).clip(1)
    assert verdict(*ratio_interval(noisy, rng.normal(11, 7, 20).clip(1))[1:]) == "inconclusive"


def test_percent_of_peak_only_for_fp32_rows():
    for precision, expect in (("fp32", True), ("int8", False), ("fp16", False)):
        row = BenchRow("x", precision=precision)
        _fill(row, [10.0] * 5, {"macs_per_pixel": 1000}, (1, 3, 64, 64), peak=50.0)
        assert row.gflops and (row.peak_fraction is not None) == expect


def test_bench_json_and_models_json_are_machine_readable(engine):
    res = runner.invoke(app, ["bench", str(engine), "--shape", "1x3x32x32", "--iters", "2", "--warmup", "0", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["rows"][0]["status"] == "ok" and len(doc["rows"][0]["latency_ms"]["samples"]) == 2


def test_tegrastats_lines_of_each_jetpack():
    assert parse_tegrastats_power_mw("RAM 2000/7000MB ... VDD_IN 5123mW/5000mW VDD_CPU_GPU_CV 1000mW/900mW") == 5123
    assert parse_tegrastats_power_mw("RAM 1500/3964MB ... POM_5V_IN 3211/3100 POM_5V_GPU 40/40") == 3211
    assert parse_tegrastats_power_mw("RAM 1500/3964MB CPU [1%@102]") is None


def test_bad_specs():
    with pytest.raises(UsageError, match="--iters"):
        BenchSpec(iters=0)
    with pytest.raises(UsageError, match="--shape"):
        BenchSpec(shape=(1, 1, 64, 64))


def test_bench_cli_writes_reports_and_fails_on_errors(engine, tmp_path):
    res = runner.invoke(app, ["-q", "bench", str(engine), "--shape", "1x3x32x32", "--iters", "2", "--report",
                              str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"bench.json", "bench.md", "bench.png"}
    res = runner.invoke(app, ["-q", "bench", "missing.onnx", "--shape", "1x3x32x32", "--iters", "1"])
    assert res.exit_code == 1
    res = runner.invoke(app, ["-q", "bench", str(engine), "--shape", "1x3x32"])
    assert res.exit_code == 2
