"""A checkpoint's config.json never makes udc-edge import the module it names (issue 15).

The planted module writes a marker file when imported: the marker is the proof that code ran.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import ModelError
from udc_edge.models import load_checkpoint
from udc_edge.models.checkpoint import trusting_checkpoint_code

EVIL = '''
import pathlib, torch
pathlib.Path({marker!r}).write_text("imported")
class Net(torch.nn.Module):
    multiple = 1
    def __init__(self):
        super().__init__()
        self.c = torch.nn.Conv2d(3, 3, 1)
    def forward(self, x):
        return self.c(x)
'''


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """(checkpoint folder naming ``evilmod_i15:Net``, marker path); the module is importable."""
    marker = tmp_path / "IMPORTED"
    (tmp_path / "evilmod_i15.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the current folder on the path too, as in the report
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"c.weight": torch.zeros(3, 3, 1, 1), "c.bias": torch.zeros(3)}, ckpt / "model.safetensors")
    (ckpt / "config.json").write_text(json.dumps({"arch": "evilmod_i15:Net", "kwargs": {}}))
    yield ckpt, marker
    import sys

    sys.modules.pop("evilmod_i15", None)


def test_checkpoint_naming_a_module_is_refused_without_importing_it(planted):
    ckpt, marker = planted
    with pytest.raises(ModelError, match="--trust-code"):
        load_checkpoint(ckpt)
    assert not marker.exists()


def test_this_module_is_not_imported_either(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file({"w": torch.zeros(1)}, ckpt / "model.safetensors")
    (ckpt / "config.json").write_text(json.dumps({"arch": "this:Net", "kwargs": {}}))
    import sys

    had = "this" in sys.modules
    with pytest.raises(ModelError, match="names code to import"):
        load_checkpoint(ckpt)
    assert "Beautiful is better" not in capsys.readouterr().out
    assert ("this" in sys.modules) == had


def test_cli_refuses_in_one_line_and_imports_only_with_trust_code(planted):
    ckpt, marker = planted
    runner = CliRunner()
    res = runner.invoke(app, ["restore", str(ckpt), "nothing.png", "--out", "o"])
    assert res.exit_code == 1 and not marker.exists()
    assert "Traceback" not in res.output and "--trust-code" in res.output
    # opted in: the module is imported (and the next error is about the missing image)
    res = runner.invoke(app, ["--trust-code", "restore", str(ckpt), "nothing.png", "--out", "o"])
    assert marker.exists(), res.output


def test_python_opt_in_by_argument_and_context(planted):
    ckpt, marker = planted
    with trusting_checkpoint_code():
        model, cfg = load_checkpoint(ckpt)
    assert marker.exists() and cfg["arch"] == "evilmod_i15:Net"
    assert float(model(torch.ones(1, 3, 4, 4)).abs().sum()) == 0.0
    with pytest.raises(ModelError):  # the context ended: refused again
        load_checkpoint(ckpt)
    load_checkpoint(ckpt, trust_code=True)


def test_shipped_purifier_naming_udc_edge_class_still_loads():
    from udc_edge.models.zoo import load_model, shipped_models

    name = next(n for n in shipped_models() if n.startswith("purifier"))
    _, desc = load_model(name)
    assert desc["arch"].startswith("udc_edge.")
