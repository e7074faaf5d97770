"""verify's direction (issue 15): an engine that is faithful on clean inputs but worse under
black-box queries must FAIL; the same engine without the degradation must pass.

The engines are numpy callables wrapping the torch model (no ONNX needed to test the
comparison's sign); the reference, the dataset and the SimBA attacks are real.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from udc_edge.data.readers import open_paired_dataset
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
from udc_edge.deploy.reference import VerifySpec, make_reference_set
from udc_edge.deploy.verify import verify_engine


def _identity_restorer() -> torch.nn.Module:
    """A 1x1 conv initialised to the identity: outputs close to the ground truth, so that a
    degraded output is measurably worse."""
    conv = torch.nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).reshape(3, 3, 1, 1))
        conv.bias.zero_()
    return conv.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = _identity_restorer()
    root = tmp_path_factory.mktemp("direction")
    write_synthetic_dataset(root / "ds", SynthSpec(display="toled", count=2, size=32, source="photos:test", seed=2))
    spec = VerifySpec(attacks=("simba",), simba_iterations=30, limit=2)
    rs = make_reference_set(model, open_paired_dataset(root / "ds"), spec)
    return model, rs, spec


def _engine(model, clean: list[np.ndarray], degrade_queries: bool):
    """Runs ``model``; with ``degrade_queries`` any input that is not one of ``clean`` gets an
    output with a +-0.2 checkerboard added: worse only under the attacker's queries."""
    clean_nchw = [c.transpose(2, 0, 1)[None].astype(np.float32) for c in clean]

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
        if degrade_queries and not any(c.shape == x.shape and np.array_equal(c, x) for c in clean_nchw):
            checker = (np.indices(x.shape[2:]).sum(axis=0) % 2) * 0.4 - 0.2
            out = np.clip(out + checker, 0, 1)
        return out

    return run


def test_engine_worse_only_under_black_box_queries_fails(setup):
    model, rs, spec = setup
    report, _ = verify_engine(_engine(model, rs.lq, degrade_queries=True), rs, spec)
    by_name = {c.name: c for c in report.checks}
    assert by_name["clean PSNR drop (dB)"].passed and by_name["output fidelity vs reference (dB)"].passed
    bb = [c for c in report.checks if "black-box" in c.name and "PSNR" in c.name]
    assert bb and all(c.value > spec.max_psnr_drop and not c.passed for c in bb)
    assert all(c.value == pytest.approx(c.reference - c.engine) for c in bb)  # drop = reference minus engine
    assert not report.passed


def test_same_engine_without_the_degradation_passes(setup):
    model, rs, spec = setup
    report, _ = verify_engine(_engine(model, rs.lq, degrade_queries=False), rs, spec)
    assert report.passed, [(c.name, c.value) for c in report.checks if not c.passed]
