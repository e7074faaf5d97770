"""Architectures, registry, padding and MAC counting (issue 3, "Architectures")."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from udc_edge.core.errors import InputError, ModelError
from udc_edge.models import build, count_macs, count_params, create, list_models, run_padded
from udc_edge.models.padding import crop, pad_to_multiple
from udc_edge.models.registry import model_config

TESTS_DIR = Path(__file__).resolve().parents[1]

# tiny presets plus the other unet options, so every code path is shape-checked
TINY = [
    ("unet-t", {}),
    ("unet-t", {"act": "leaky", "up": "shuffle", "skip": "concat"}),
    ("nafnet-t", {}),
]
ODD_SIZES = [(37, 53), (5, 7), (1, 1), (2, 3), (64, 64)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def byo_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS_DIR))


def _open_nafnet_gates(model: nn.Module) -> None:
    """NAFNet's beta/gamma start at zero (blocks are the identity); make them non-zero."""
    for name, p in model.named_parameters():
        if name.endswith(("beta", "gamma")):
            nn.init.normal_(p, std=0.5)


def test_presets_are_listed():
    assert {"unet-t", "unet-s", "nafnet-t", "nafnet-s"} <= set(list_models())


@pytest.mark.parametrize("name,kw", TINY)
@pytest.mark.parametrize("size", ODD_SIZES)
def test_run_padded_keeps_shape_for_any_size(name, kw, size):
    model = create(name, **kw).eval()
    _open_nafnet_gates(model)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = run_padded(model, x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["unet-t", "unet-s", "nafnet-t", "nafnet-s"])
def test_multiple_matches_downsampling(name):
    model = create(name).eval()
    m = model.multiple
    x = torch.rand(1, 3, m, 2 * m)
    with torch.no_grad():
        assert model(x).shape == x.shape
    depth = len(model.downs)
    assert m == 2**depth


def test_run_padded_is_plain_forward_on_multiples():
    model = create("unet-t").eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert torch.equal(run_padded(model, x), model(x))


@pytest.mark.parametrize("name", ["unet-t", "nafnet-t"])
def test_global_residual_is_identity_when_last_conv_is_zero(name):
    model = create(name).eval()
    last = model.tail if name.startswith("unet") else model.ending
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        assert torch.equal(model(x), x)


def test_unet_gradients_reach_every_parameter_and_the_input():
    model = create("unet-t", skip="concat")
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    run_padded(model, x).square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_nafnet_gradients_flow():
    model = create("nafnet-t")
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    run_padded(model, x).square().mean().backward()
    # at init the gates are closed: only they (and intro/ending) learn on the first step
    gates = [p for n, p in model.named_parameters() if n.endswith(("beta", "gamma"))]
    assert gates and all(g.grad.abs().sum() > 0 for g in gates)
    model.zero_grad()
    _open_nafnet_gates(model)
    x.grad = None
    run_padded(model, x).square().mean().backward()
    assert x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_pad_to_multiple_reflects_and_crops_back():
    x = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
    xp, size = pad_to_multiple(x, 4)
    assert xp.shape[-2:] == (8, 8) and size == (5, 7)
    assert torch.equal(xp[..., 5, :7], x[..., 3, :])  # reflect: row 5 mirrors row 3
    assert torch.equal(crop(xp, size), x)


def test_pad_falls_back_to_replicate_for_tiny_images():
    x = torch.rand(1, 3, 1, 2)
    xp, size = pad_to_multiple(x, 8)
    assert xp.shape[-2:] == (8, 8)
    assert torch.equal(xp[..., 7, 7], x[..., 0, 1])
    assert torch.equal(crop(xp, size), x)


def test_run_padded_rejects_wrong_channels_and_rank():
    model = create("unet-t")
    with pytest.raises(InputError, match="4 channels"):
        run_padded(model, torch.rand(1, 4, 8, 8))
    with pytest.raises(InputError, match="NCHW"):
        run_padded(model, torch.rand(3, 8, 8))


def _export_and_compare(model: nn.Module, sizes) -> float:
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.rand(1, 3, *sizes[0]),),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}},
        )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n, (h, w) in enumerate(sizes, start=1):
        x = torch.rand(n, 3, h, w)
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"input": x.numpy()})[0]
        assert out.shape == ref.shape
        worst = max(worst, float(np.abs(out - ref).max()))
    return worst


@pytest.mark.parametrize("name", ["unet-t", "nafnet-t"])
def test_onnx_export_matches_torch(name):
    model = create(name).eval()
    _open_nafnet_gates(model)
    # dynamic H, W: the graph built at 32x48 must also run at other multiples
    assert _export_and_compare(model, [(32, 48), (16, 64)]) < 1e-4


def test_unknown_name_suggests_close_names():
    with pytest.raises(ModelError) as err:
        create("unet-x")
    assert "unet-t" in str(err.value) and "unet-s" in str(err.value)
    with pytest.raises(ModelError, match="nafnet"):
        build("nafnte", {})


def test_bad_kwargs_are_model_errors():
    with pytest.raises(ModelError, match="widht"):
        create("unet-t", widht=8)
    with pytest.raises(ModelError, match="act"):
        create("unet-t", act="gelu")
    with pytest.raises(ModelError, match="same length"):
        create("nafnet-t", dec_blocks=[1])


def test_create_applies_overrides_and_config_is_a_copy():
    model = create("unet-t", act="leaky")
    assert any(isinstance(m, nn.LeakyReLU) for m in model.modules())
    cfg = model_config("unet-t")
    cfg["kwargs"]["width"] = 999
    assert model_config("unet-t")["kwargs"]["width"] != 999


def test_byo_class_builds_with_default_multiple(byo_path):
    model = build("byo_models:Tiny", {"hidden": 6})
    assert model.multiple == 1
    assert model.conv1.out_channels == 6
    assert create("byo_models:Tiny", hidden=3).conv1.out_channels == 3
    strided = build("byo_models:Strided", {})
    assert strided.multiple == 4
    x = torch.rand(1, 3, 9, 11)
    assert run_padded(strided, x).shape == x.shape


def test_byo_errors_name_the_problem(byo_path):
    with pytest.raises(ModelError, match="ModuleNotFoundError") as err:
        build("no_such_pkg.nets:Net", {})
    assert "no_such_pkg" in str(err.value)
    with pytest.raises(ModelError, match="did you mean Tiny"):
        build("byo_models:Tiyn", {})
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        build("byo_models:NOT_A_MODULE", {})
    with pytest.raises(ModelError, match="unexpected keyword"):
        build("byo_models:Tiny", {"nope": 1})


def test_count_macs_of_one_conv_is_analytic():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    assert count_macs(conv, 17, 19) == 3 * 5 * 3 * 3 * 17 * 19
    assert count_params(conv) == 3 * 5 * 9 + 5
    conv.multiple = 8  # counted at the padded size run_padded would use
    assert count_macs(conv, 17, 19) == 3 * 5 * 3 * 3 * 24 * 24


def test_count_macs_scales_with_area_for_a_fully_convolutional_net():
    model = create("unet-t")
    small, big = count_macs(model, 64, 64), count_macs(model, 128, 128)
    assert small > 0 and big == 4 * small
