"""Shared fixtures: tiny images, a tiny trained restorer and its ONNX export (session-wide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread: multi-threaded torch slows down 10-50x when another process holds
    a core of a small shared machine, which makes test times erratic."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_restorer_dir(tmp_path_factory):
    """A unet-t trained for 80 steps on synthetic T-OLED pairs: small, but a real restorer."""
    from udc_edge.training.restorer import TrainSpec, train_restorer

    out = tmp_path_factory.mktemp("tiny") / "run"
    threads = torch.get_num_threads()
    try:
        train_restorer(TrainSpec(arch="unet-t", data="synth:toled", steps=80, batch=4, patch=48, pool=8, lr=3e-3,
                                 val_every=80, val_count=2, warmup=5, threads=1, device="cpu", out=str(out)))
    finally:
        torch.set_num_threads(threads)
    return out / "best"


@pytest.fixture(scope="session")
def tiny_restorer(tiny_restorer_dir):
    from udc_edge.models import load_checkpoint

    model, _ = load_checkpoint(tiny_restorer_dir)
    return model


@pytest.fixture(scope="session")
def tiny_onnx(tiny_restorer, tmp_path_factory):
    """The tiny restorer exported with dynamic H/W (checked for parity by the exporter)."""
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_restorer, path, ExportSpec(height=64, width=64, parity_images=1))
    return path


@pytest.fixture(scope="session")
def heldout():
    """Held-out synthetic T-OLED pairs (photos the tiny model never saw)."""
    from udc_edge.data.sources import make_source
    from udc_edge.data.synth import UDCSimulator, image_rng

    sim = UDCSimulator.for_display("toled")
    sample, _ = make_source("photos:test")
    pairs = [sim.simulate(sample(64, image_rng(77, i)), image_rng(77, i)) for i in range(3)]
    return [(lq.transpose(2, 0, 1)[None].copy(), gt) for lq, gt in pairs]
