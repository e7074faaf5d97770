"""Checkpoints and bring-your-own weights (issue 3, "Checkpoints" and "Bad input")."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from udc_edge.core.errors import InputError, ModelError, OutputError
from udc_edge.core.fileio import MARKER
from udc_edge.models import create, load_checkpoint, save_checkpoint
from udc_edge.models.checkpoint import load_weights
from udc_edge.models.registry import model_config

TESTS_DIR = Path(__file__).resolve().parents[1]


class Smuggler:
    """Unpickling this object would create a file: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _randomised(name: str) -> nn.Module:
    """A preset with every parameter random (so zero-initialised ones are tested too)."""
    torch.manual_seed(1)
    model = create(name)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model.eval()


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.fixture
def saved(tmp_path):
    model = _randomised("unet-t")
    metrics = {"psnr": torch.tensor(31.25), "ssim": np.float32(0.5)}  # as training has them
    extra = {"data": {"source": "synth:poled", "pairs": 12}, "metrics": metrics}
    out = save_checkpoint(tmp_path / "ckpt", model, model_config("unet-t"), extra)
    return model, out


@pytest.mark.parametrize("name", ["unet-t", "nafnet-t"])
def test_round_trip_is_bit_exact(tmp_path, name):
    model = _randomised(name)
    out = save_checkpoint(tmp_path / "ckpt", model, model_config(name))
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "config.json", "model.safetensors"]
    loaded, config = load_checkpoint(out)
    _assert_same_state(model, loaded)
    x = torch.rand(1, 3, 16, 20)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert config["arch"] == model_config(name)["arch"]
    assert config["kwargs"] == model_config(name)["kwargs"]


def test_config_and_extra_are_stored(saved):
    _, out = saved
    doc = json.loads((out / "config.json").read_text())
    assert doc["arch"] == "unet" and doc["metrics"] == {"psnr": 31.25, "ssim": 0.5}
    assert doc["data"]["source"] == "synth:poled"


def test_safetensors_file_alone_carries_its_config(saved, tmp_path):
    model, out = saved
    lone = tmp_path / "lone" / "weights.safetensors"
    lone.parent.mkdir()
    lone.write_bytes((out / "model.safetensors").read_bytes())
    loaded, config = load_checkpoint(lone)  # no config.json beside it: metadata is used
    _assert_same_state(model, loaded)
    assert config["metrics"]["psnr"] == 31.25


def test_sidecar_that_disagrees_with_metadata_is_refused(saved):
    _, out = saved
    doc = json.loads((out / "config.json").read_text())
    doc["kwargs"]["width"] = 8
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="do not belong together"):
        load_checkpoint(out)


def test_existing_checkpoint_is_not_overwritten_by_default(saved):
    _, out = saved
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(OutputError, match="not empty"):
        save_checkpoint(out, create("unet-t"), model_config("unet-t"))
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["ckpt"]  # no temp folder left behind
    save_checkpoint(out, create("unet-t"), model_config("unet-t"), overwrite=True)
    assert (out / "model.safetensors").read_bytes() != before


@pytest.mark.parametrize("keep", [0, 4, 40, 0.5, -1])
def test_truncated_safetensors_is_a_clear_error(saved, keep):
    _, out = saved
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    weights.write_bytes(data[:cut])
    with pytest.raises(ModelError, match="corrupt, truncated") as err:
        load_checkpoint(out)
    assert str(weights) in str(err.value)


def test_missing_checkpoint_paths_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="model.safetensors"):
        load_checkpoint(tmp_path / "empty")
    with pytest.raises(InputError, match="does not exist"):
        load_weights(create("unet-t"), tmp_path / "nope.pt")


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3, "note": "trained"},
        lambda sd: {"params": sd},
        lambda sd: collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
    ],
    ids=["plain", "nested-state_dict", "nested-params", "ddp-prefix"],
)
def test_load_weights_from_torch_state_dict(tmp_path, wrap):
    model = _randomised("nafnet-t")
    path = tmp_path / "w.pt"
    torch.save(wrap(model.state_dict()), path)
    target = create("nafnet-t")
    load_weights(target, path)
    _assert_same_state(model, target)


def test_load_weights_from_safetensors(tmp_path):
    model = _randomised("unet-t")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    target = create("unet-t")
    load_weights(target, path)
    _assert_same_state(model, target)


def test_pickle_with_objects_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "executed"
    sd = collections.OrderedDict(create("unet-t").state_dict())
    sd["payload"] = Smuggler(marker)
    path = tmp_path / "evil.pt"
    torch.save(sd, path)
    with pytest.raises(ModelError) as err:
        load_weights(create("unet-t"), path)
    msg = str(err.value)
    assert "weights_only" in msg and "safetensors" in msg and "will not unpickle" in msg
    assert "Unsupported global" in msg  # the reason torch gave, not its whole essay
    assert not marker.exists()


def test_non_torch_file_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        load_weights(create("unet-t"), path)


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = dict(create("unet-t").state_dict())
    del sd["tail.bias"]
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save(sd, path)
    with pytest.raises(ModelError) as err:
        load_weights(create("unet-t"), path)
    msg = str(err.value)
    assert "1 missing key(s): tail.bias" in msg
    assert "1 unexpected key(s): extra.weight" in msg


def test_many_missing_keys_are_summarised(tmp_path):
    sd = create("unet-t").state_dict()
    path = tmp_path / "w.pt"
    gone = ("encoders", "decoders")
    torch.save({k: v for k, v in sd.items() if not k.startswith(gone)}, path)
    n_missing = sum(k.startswith(gone) for k in sd)
    assert n_missing > 10
    with pytest.raises(ModelError, match=rf"{n_missing} missing key\(s\).*more\)"):
        load_weights(create("unet-t"), path)


def test_shape_mismatch_is_listed(tmp_path):
    sd = dict(create("unet-t").state_dict())
    sd["tail.weight"] = torch.zeros(3, 5, 3, 3)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    with pytest.raises(ModelError) as err:
        load_weights(create("unet-t"), path)
    assert "1 shape mismatch(es): tail.weight: file (3, 5, 3, 3) vs model (3, 4, 3, 3)" in str(
        err.value
    )


def test_weights_of_a_wider_model_are_refused(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(create("unet-t", width=8).state_dict(), path)
    target = create("unet-t")
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ModelError, match="shape mismatch"):
        load_weights(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_safetensors_content_is_detected_whatever_the_suffix(tmp_path):
    model = _randomised("unet-t")
    path = tmp_path / "weights.bin"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    target = create("unet-t")
    load_weights(target, path)
    _assert_same_state(model, target)


def test_byo_checkpoint_round_trip(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    from udc_edge.models import build

    config = {"arch": "byo_models:Tiny", "kwargs": {"hidden": 5}}
    model = build(config["arch"], config["kwargs"])
    out = save_checkpoint(tmp_path / "byo", model, config)
    loaded, cfg = load_checkpoint(out, trust_code=True)  # the user's own class: opted in
    _assert_same_state(model, loaded)
    assert cfg["arch"] == "byo_models:Tiny" and loaded.multiple == 1
