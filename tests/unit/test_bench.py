"""`udc-edge bench`: statistics, interleaving, overhead, comparisons, Jetson parsing."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import UsageError
from udc_edge.deploy.bench import BenchSpec, compare_reports, measure_overhead, run_bench
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
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
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


def test_compare_marks_regressions(engine, tmp_path):
    rep = run_bench([str(engine)], BenchSpec(shape=(1, 3, 32, 32), iters=3, warmup=0))
    old = json.loads(rep.to_json())
    lat = old["rows"][0]["latency_ms"]
    lat.update(p50=lat["p50"] / 10, mean=lat["mean"] / 10, std=0.0)  # the old run was 10x faster
    (tmp_path / "old.json").write_text(json.dumps(old))
    notes = compare_reports(rep, tmp_path / "old.json")
    assert rep.rows[0].verdict == "regression" and "regression" in notes[0]
    with pytest.raises(UsageError, match="bench.json"):
        compare_reports(rep, tmp_path / "nope.json")


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
