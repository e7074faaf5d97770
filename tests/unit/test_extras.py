"""The one way a runtime-only install is told to add the torch extra."""

from __future__ import annotations

import sys

import pytest

from udc_edge.core.errors import BackendUnavailableError
from udc_edge.core.extras import missing_extra, require_torch


def test_require_torch_names_the_extra_when_torch_cannot_be_imported(monkeypatch):
    assert require_torch() is sys.modules["torch"]
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees when it is absent
    with pytest.raises(BackendUnavailableError, match=r'restoring needs PyTorch .*pip install "udc-edge\[torch\]"'):
        require_torch("restoring")


@pytest.mark.parametrize("name", ["torch", "torch.nn", "diffusers.models", "safetensors", "onnxscript"])
def test_an_import_of_the_torch_extra_becomes_one_line(name):
    err = missing_extra(ModuleNotFoundError(f"No module named {name!r}", name=name), "udc-edge train")
    assert err is not None and err.exit_code == 1
    assert str(err).startswith("udc-edge train needs PyTorch") and "\n" not in str(err)


@pytest.mark.parametrize("name", ["onnxruntime", "tensorrt", "skimage", None])
def test_other_missing_libraries_are_not_blamed_on_the_torch_extra(name):
    assert missing_extra(ModuleNotFoundError("No module", name=name), "udc-edge build") is None
