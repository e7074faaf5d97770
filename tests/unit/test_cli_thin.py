"""The CLI stays thin: radon's complexity bound, option types defined once, and the logic the
commands used to hold (bring-your-own detection, purifier wrapping, mode defaults, option
parsing) tested where it now lives, in the library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from radon.complexity import cc_visit

import udc_edge
from udc_edge.attacks import parse_eps_list
from udc_edge.core.errors import ModelError, UsageError
from udc_edge.defence.defence import DEFENDED_IMAGES, DefenceSpec, check_defended_eval, defence_specs
from udc_edge.deploy.bench import TABLE_COLUMNS, BenchRow
from udc_edge.engines.spec import ShapeProfile, parse_exclude
from udc_edge.export.onnx_export import ExportSpec
from udc_edge.export.request import ExportSource, export_source, sidecar_path

PKG = Path(udc_edge.__file__).parent
MAX_CC = 10  # issue 16: no function of the application layer above this


def _app_files() -> list[Path]:
    return [PKG / "cli.py", *sorted((PKG / "commands").glob("*.py")), *sorted((PKG / "demo").glob("*.py"))]


def _too_complex(path: Path) -> list[str]:
    blocks = cc_visit(path.read_text())
    found = []
    for b in blocks:
        for f in [b, *getattr(b, "methods", [])]:
            if f.complexity > MAX_CC:
                found.append(f"{path.name}:{f.lineno} {f.name} = {f.complexity}")
    return found


def test_no_cli_function_is_above_complexity_10():
    over = [line for p in _app_files() for line in _too_complex(p)]
    assert not over, f"move the logic into the library: {over}"


def test_the_complexity_check_sees_a_complex_command(tmp_path):
    """The check itself can fail: a command with eleven branches is reported."""
    body = "\n".join(f"    if x == {i}:\n        return {i}" for i in range(MAX_CC))
    (tmp_path / "cmd.py").write_text(f"def cmd(x):\n{body}\n    return -1\n")
    assert _too_complex(tmp_path / "cmd.py") == [f"cmd.py:1 cmd = {MAX_CC + 1}"]


def test_option_types_are_defined_once():
    defined: dict[str, list[str]] = {}
    for path in sorted((PKG / "commands").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name.endswith(("Opt", "Arg")):
                    defined.setdefault(name, []).append(path.name)
    twice = {k: v for k, v in defined.items() if len(v) > 1}
    assert not twice, twice
    for shared in ("TrainDataOpt", "PairedDataOpt", "SeedOpt", "ThreadsOpt", "OverwriteOpt"):
        assert defined[shared] == ["common.py"]


# -- what the commands used to hold --------------------------------------------------------
def test_export_source_detects_bring_your_own_by_colon():
    assert ExportSource("pkg.mod:Net").byo_arch == "pkg.mod:Net"
    assert ExportSource("-", arch="pkg.mod:Net").byo_arch == "pkg.mod:Net"
    assert ExportSource("unet-s-poled").byo_arch is None
    assert ExportSource("-", arch="unet").byo_arch is None
    assert ExportSource("pkg.mod:Net", arch="unet").byo_arch is None  # --arch names the architecture


def test_export_source_refusals_come_before_any_loading(tmp_path):
    with pytest.raises(UsageError, match="MODEL to export, or --purifier"):
        ExportSource()
    with pytest.raises(UsageError, match="do not apply to purifier graphs"):
        export_source(ExportSource(purifier="purifier-poled-k1"), tmp_path / "p.onnx", ExportSpec(output_index=0))
    with pytest.raises(UsageError, match="--stub-module applies to package.module:Class"):
        export_source(ExportSource("unet-s-poled", stub_modules=("cv2",)), tmp_path / "r.onnx")
    with pytest.raises(ModelError, match="without --weights"):
        export_source(ExportSource("pkg.mod:Net"), tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())
    assert sidecar_path(tmp_path / "m.onnx") == tmp_path / "m.onnx.export.json"


def test_eval_defaults_depend_on_the_mode():
    specs = defence_specs((4 / 255, 8 / 255), None, attack_steps=5, simba_iterations=None, cw_max_iter=7)
    assert [s.eps for s in specs] == [4 / 255, 8 / 255]
    d = DefenceSpec()
    assert specs[0].attacks == ("pgd", "cw", "simba") and specs[0].attack_steps == 5
    assert specs[0].simba_iterations == d.simba_iterations and specs[0].cw_max_iter == 7
    assert defence_specs((8 / 255,), "square")[0].attacks == ("pgd", "square")
    assert check_defended_eval({"--arch": None, "--weights": None}, False, None) == DEFENDED_IMAGES
    assert check_defended_eval({}, False, 3) == 3
    with pytest.raises(UsageError, match="torch restorer"):
        check_defended_eval({"--surrogate": "unet-s-poled"}, False, None)
    with pytest.raises(UsageError, match="torch restorer"):
        check_defended_eval({}, True, None)
    with pytest.raises(UsageError, match="--limit 0"):
        check_defended_eval({}, False, 0)


def test_option_parsers():
    assert parse_eps_list("4/255, 8/255") == (4 / 255, 8 / 255)
    with pytest.raises(UsageError, match="gives no budget"):
        parse_eps_list(" , ")
    assert ShapeProfile.from_options(None, None, None) is None
    p = ShapeProfile.from_options("1x3x8x8", "1x3x16x16", "1x3x32x32")
    assert p is not None and p.opt == (1, 3, 16, 16)
    with pytest.raises(UsageError, match="all of --min-shape"):
        ShapeProfile.from_options("1x3x8x8", None, "1x3x32x32")
    assert parse_exclude("") == ((), False)
    assert parse_exclude("auto") == ((), True)
    assert parse_exclude("conv1,conv2") == (("conv1", "conv2"), False)
    assert parse_exclude("auto:robust") == ((), True)  # BuildSpec.robust_exclude tells it from plain auto
    with pytest.raises(UsageError, match="'auto' or 'auto:robust'"):
        parse_exclude("auto:fast")


def test_bench_row_cells_follow_the_columns():
    ok = BenchRow("/x/e.onnx", backend="onnxruntime", precision="int8", size_mb=1.5,
                  latency_ms={"p50": 1.0, "p90": 2.0, "p99": 3.0}, images_per_s=9.0,
                  gflops=2.25, verdict="same", threads=4)
    failed = BenchRow("/x/bad.onnx", status="error: broken")
    assert ok.cells() == ["e.onnx", "4", "onnxruntime", "int8", "1.50", "1.00", "2.00", "3.00", "9.00", "2.2",
                          "ok (same)"]
    assert failed.cells()[1] == "default"
    assert failed.cells()[5:] == ["-", "-", "-", "-", "-", "error: broken"]
    assert len(ok.cells()) == len(TABLE_COLUMNS)
