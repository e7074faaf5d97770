"""Property: every L-inf attack keeps x_adv in [0, 1] and within eps of x, for any input."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from udc_edge.attacks import LINF_ATTACKS, AttackSpec, attack


def _tiny_net() -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, padding=1))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net


NET = _tiny_net()


def _engine(arr: np.ndarray) -> np.ndarray:
    """The same net seen as a numpy engine callable (black-box attacks only)."""
    with torch.no_grad():
        return NET(torch.from_numpy(arr)).numpy()


BUDGETS = st.one_of(st.sampled_from([1 / 255, 2 / 255, 4 / 255, 8 / 255]),
                    st.floats(min_value=1e-4, max_value=1.0))


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(LINF_ATTACKS),
    eps=BUDGETS,
    seed=st.integers(0, 2**31 - 1),
    size=st.sampled_from([(1, 8, 8), (2, 16, 12), (1, 2, 2)]),
    saturate=st.floats(0.0, 0.5),
    objective=st.sampled_from(["gt", "clean"]),
    budget=st.integers(2, 12),
    as_engine=st.booleans(),
)
def test_linf_attacks_stay_in_unit_box_and_budget(
    name, eps, seed, size, saturate, objective, budget, as_engine
):
    n, h, w = size
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3, h, w), dtype=np.float32)
    mask = rng.random(x.shape) < saturate  # pixels on the box edges, where clipping bites
    x[mask] = rng.integers(0, 2, size=int(mask.sum())).astype(np.float32)
    y = rng.random((n, 3, h, w), dtype=np.float32)
    extra = {
        "pgd": {"steps": budget}, "ifgsm": {"steps": budget}, "mifgsm": {"steps": budget},
        "simba": {"simba_iterations": budget, "simba_step": min(1.0, 2 * eps)},
        "square": {"square_queries": budget},
    }[name]
    spec = AttackSpec(name, eps=eps, seed=seed % 1000, objective=objective, **extra)
    target = _engine if as_engine and name in ("simba", "square") else NET
    res = attack(target, x, y if objective == "gt" else None, spec)
    x_adv = np.asarray(res.x_adv)
    assert x_adv.shape == x.shape and x_adv.dtype == np.float32
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.abs(x_adv.astype(np.float64) - x).max() <= eps + 1e-6
    assert np.all(res.linf <= eps + 1e-6)
