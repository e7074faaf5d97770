"""An edited or malformed manifest is refused with one ManifestError (issue 15): its own
fields are covered by manifest_sha256, and every field is type-checked in one place."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from udc_edge.cli import app
from udc_edge.core.errors import EngineError, ManifestError, UsageError
from udc_edge.engines import load_engine
from udc_edge.engines.build import build_engine
from udc_edge.engines.manifest import manifest_path
from udc_edge.engines.spec import BuildSpec


@pytest.fixture(scope="module")
def built(tiny_onnx, tmp_path_factory):
    d = tmp_path_factory.mktemp("manifest")
    build_engine(tiny_onnx, d / "e.onnx", BuildSpec())
    return d / "e.onnx"


def _copy(built, tmp_path, edit) -> object:
    eng = tmp_path / "e.onnx"
    shutil.copy(built, eng)
    doc = json.loads(manifest_path(built).read_text())
    manifest_path(eng).write_text(json.dumps(edit(doc)))
    return eng


def _set(key, value):
    def edit(doc):
        doc[key] = value
        return doc
    return edit


def test_untouched_manifest_loads(built):
    assert load_engine(built).manifest.manifest_sha256


@pytest.mark.parametrize(("key", "value"), [("precision", "int8"), ("backend", "tensorrt"), ("multiple", 8),
                                            ("shape_profile", {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8],
                                                               "max": [1, 3, 9, 9]})])
def test_an_edited_field_is_refused(built, tmp_path, key, value):
    with pytest.raises(ManifestError, match="edited after the build"):
        load_engine(_copy(built, tmp_path, _set(key, value)))


@pytest.mark.parametrize("edit", [lambda d: [d], _set("multiple", 0), _set("multiple", "abc"), _set("multiple", True),
                                  _set("shape_profile", "1x3x64x64"), _set("inputs", "input"),
                                  _set("device", []), _set("precision", 8)], ids=[
    "list", "multiple-0", "multiple-abc", "multiple-bool", "profile-string", "inputs-string", "device-list",
    "precision-int"])
def test_malformed_manifest_is_one_typed_error(built, tmp_path, edit):
    with pytest.raises(ManifestError, match="malformed"):
        load_engine(_copy(built, tmp_path, edit))


def test_cli_edited_manifest_is_one_line(built, tmp_path):
    eng = _copy(built, tmp_path, _set("multiple", "abc"))
    res = CliRunner().invoke(app, ["bench", str(eng), "--shape", "1x3x32x32", "--iters", "1", "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and "malformed" in doc["rows"][0]["status"] and "Traceback" not in res.output


def test_fixed_shape_engine_given_another_size_is_an_engine_error(tiny_restorer, tmp_path):
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    export_onnx(tiny_restorer, tmp_path / "fixed.onnx", ExportSpec(height=32, width=32, parity_images=1,
                                                                   dynamic=False))
    build_engine(tmp_path / "fixed.onnx", tmp_path / "fixed-e.onnx", BuildSpec())
    with load_engine(tmp_path / "fixed-e.onnx") as e:
        assert e(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3, 32, 32)
        with pytest.raises(EngineError, match="fixed when it was exported"):
            e(np.zeros((1, 3, 48, 48), np.float32))


def test_unknown_precision_is_a_usage_error():
    with pytest.raises(UsageError, match="int4"):
        BuildSpec(precision="int4")
