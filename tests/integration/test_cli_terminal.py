"""What the terminal shows survives (issue 15): [brackets] in messages and help, whole tables
when piped (CliRunner output is not a terminal: 80 columns), --json for scripts."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.models.zoo import shipped_models

runner = CliRunner()


def test_help_keeps_square_brackets_and_shows_defaults():
    res = runner.invoke(app, ["eval", "--help"])
    assert res.exit_code == 0
    flat = " ".join(res.output.split())
    assert "Comma-separated attacks [default: pgd,ifgsm,mifgsm,cw,simba,square" in flat
    res = runner.invoke(app, ["data", "synth", "--help"])
    assert "[default: poled]" in " ".join(res.output.split())


def test_error_messages_keep_square_brackets(tmp_path):
    from udc_edge.core.errors import BackendUnavailableError

    @app.command("_raise_for_test", hidden=True)
    def _raise() -> None:
        raise BackendUnavailableError('TensorRT is not installed', 'pip install "udc-edge[trt]" [x]')

    try:
        res = runner.invoke(app, ["_raise_for_test"])
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "_raise_for_test"]
    assert res.exit_code == 1 and 'pip install "udc-edge[trt]" [x]' in res.output, res.output


def test_models_table_is_not_cut_when_piped():
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0 and "…" not in res.output
    for name in shipped_models():
        assert f" {name} " in res.output, name


def test_models_json():
    res = runner.invoke(app, ["models", "--json"])
    doc = json.loads(res.stdout)
    assert {r["name"] for r in doc["shipped"]} == set(shipped_models())
    assert all(r["params"] > 0 for r in doc["architectures"])


def test_trt_status_is_stated_wherever_backend_trt_is_offered(tmp_path):
    for cmd in (["build", "--help"], ["doctor", "--help"]):
        flat = " ".join(runner.invoke(app, cmd).output.split())
        assert "not yet been run against real TensorRT" in flat, cmd
    (tmp_path / "m.onnx").write_bytes(b"x")
    res = runner.invoke(
        app, ["build", str(tmp_path / "m.onnx"), "--backend", "trt", "--out", str(tmp_path / "e.engine")]
    )
    assert "not yet been run against real TensorRT" in " ".join(res.output.split())
