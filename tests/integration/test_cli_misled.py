"""What misled a user (issue 15): doctor's import advice is true; --source photos with a
folder photos here is refused clearly instead of silently using the bundled set."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import ModelError

MODULE = "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x\n"


def test_doctor_import_advice_is_true(tmp_path, monkeypatch):
    from udc_edge.export.byo import import_module

    (tmp_path / "mynets_i15b.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match=r"PYTHONPATH=\.") as info:
        import_module("mynets_i15b")
    assert "it is in this folder" in str(info.value) and "run from the folder" not in str(info.value)
    monkeypatch.syspath_prepend(str(tmp_path))  # what PYTHONPATH=. does: the advice works
    assert import_module("mynets_i15b").Net


def test_source_photos_with_a_photos_folder_here_is_refused_clearly(tmp_path, monkeypatch):
    from udc_edge.data.images import write_png

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    write_png(tmp_path / "photos" / "a.png", np.random.default_rng(0).random((64, 64, 3)).astype(np.float32), 8)
    runner = CliRunner()
    res = runner.invoke(app, ["-q", "data", "synth", "ds", "--source", "photos", "--count", "1", "--size", "32"])
    assert res.exit_code == 2 and "./photos" in res.output and "photos:all" in res.output, res.output
    assert not (tmp_path / "ds").exists()
    res = runner.invoke(app, ["-q", "data", "synth", "ds", "--source", "./photos", "--count", "1", "--size", "32"])
    assert res.exit_code == 0, res.output
