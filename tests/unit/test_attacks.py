"""Attacks on a tiny image-to-image net: budgets, strength, determinism, engines, errors."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from udc_edge.attacks import (
    AttackSpec,
    attack,
    parse_attack_names,
    parse_eps,
    transfer_attack,
)
from udc_edge.attacks.simba import direction_order
from udc_edge.attacks.square import p_selection
from udc_edge.core.errors import UsageError

EPS8 = 8 / 255
SMALL = {  # budgets small enough for a fast test, per attack
    "pgd": {"eps": EPS8, "steps": 5},
    "ifgsm": {"eps": EPS8, "steps": 5},
    "mifgsm": {"eps": EPS8, "steps": 5},
    "cw": {"cw_search_steps": 2, "cw_max_iter": 10},
    "simba": {"eps": EPS8, "simba_iterations": 30},
    "square": {"eps": EPS8, "square_queries": 30},
}



class TinyRestorer(nn.Module):
    """A 443-parameter residual conv net standing in for a restorer (fixed weights)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 3, 3, padding=1)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        self.modes_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes_seen.append(self.training)
        return x + 0.1 * self.c2(torch.tanh(self.c1(x)))


@pytest.fixture()
def net() -> TinyRestorer:
    return TinyRestorer()


@pytest.fixture()
def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    y = torch.rand(2, 3, 32, 32, generator=gen)
    x = (y + 0.03 * torch.randn(y.shape, generator=gen)).clamp(0, 1)
    return x, y


@pytest.fixture()
def onnx_engine(net, tmp_path):
    """A real ONNX Runtime session of the tiny net, wrapped as a numpy -> numpy callable."""
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.rand(1, 3, 32, 32), str(path), dynamo=False,
                          opset_version=17, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    class Engine:
        def __init__(self):
            self.images_seen = 0

        def __call__(self, arr: np.ndarray) -> np.ndarray:
            assert arr.dtype == np.float32 and arr.ndim == 4  # the adapter's contract
            self.images_seen += arr.shape[0]
            return session.run(None, {"x": arr})[0]

    return Engine()


# -- parsing and specs ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [("8/255", 8 / 255), ("0.0314", 0.0314),
                                             (" 4 / 255 ", 4 / 255), ("1", 1.0), (0.5, 0.5)])
def test_parse_eps_accepts_fractions_and_decimals(text, value):
    assert parse_eps(text) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("text", ["0", "-1/255", "1.5", "abc", "8/0", "nan", "", "300/255"])
def test_parse_eps_refuses_values_outside_unit_interval(text):
    with pytest.raises(UsageError, match="eps"):
        parse_eps(text)


@pytest.mark.parametrize("text", ["8/255/2", "8/255/255", "8//255", "8/", "/255", "1/2/3", "8/255 2", "2e", "0x1"])
def test_parse_eps_is_strict(text):
    """"8/255/2" once parsed as 8/(255/2) = 16/255: one number or ONE fraction only."""
    with pytest.raises(UsageError, match="one fraction"):
        parse_eps(text)


def test_cli_refuses_a_double_fraction_eps_with_exit_2(tmp_path):
    from typer.testing import CliRunner

    from udc_edge.cli import app

    res = CliRunner().invoke(app, ["attack", "unet-s-poled", "--data", str(tmp_path), "--eps", "8/255/2",
                                   "--out", str(tmp_path / "adv")])
    assert res.exit_code == 2 and "8/255/2" in res.output and "Traceback" not in res.output


def test_parse_attack_names_and_suggestion():
    assert parse_attack_names("pgd,simba") == ("pgd", "simba")
    assert parse_attack_names(" PGD , Square ") == ("pgd", "square")
    with pytest.raises(UsageError, match="did you mean simba"):
        parse_attack_names("pgd,simaba")
    with pytest.raises(UsageError, match="no attack"):
        parse_attack_names(" , ")


@pytest.mark.parametrize("kwargs", [
    {"name": "pgd", "eps": EPS8, "steps": 0},
    {"name": "pgd", "eps": EPS8, "steps": -3},
    {"name": "pgd", "eps": EPS8, "steps": 2.5},
    {"name": "pgd", "eps": 0.0},
    {"name": "pgd", "eps": 1.5},
    {"name": "pgd"},  # no eps
    {"name": "square"},  # no eps
    {"name": "cw", "eps": EPS8},  # L2 attack takes no eps
    {"name": "pgd", "eps": EPS8, "objective": "psnr"},
    {"name": "pgd", "eps": EPS8, "step_size": 0.0},
    {"name": "pgd", "eps": EPS8, "seed": -1},
    {"name": "pgd", "eps": EPS8, "momentum": -1.0},
    {"name": "simba", "simba_iterations": None},  # black-box without a query budget
    {"name": "square", "eps": EPS8, "square_queries": None},
    {"name": "square", "eps": EPS8, "square_queries": 0},
    {"name": "simba", "max_queries": 0},
    {"name": "simba", "simba_basis": "haar"},
    {"name": "simba", "random_start": True},
    {"name": "cw", "cw_search_steps": 0},
    {"name": "cw", "cw_lr": -0.1},
    {"name": "fgsm", "eps": EPS8},
])
def test_bad_spec_values_raise_usage_error(kwargs):
    with pytest.raises(UsageError):
        AttackSpec(**kwargs)


def test_spec_resolves_defaults_without_storing_them():
    pgd = AttackSpec("pgd", eps=EPS8)
    assert pgd.step == pytest.approx(EPS8 / 4) and pgd.uses_random_start and pgd.steps == 20
    ifgsm = AttackSpec("ifgsm", eps=EPS8, steps=10)
    assert ifgsm.step == pytest.approx(EPS8 / 10) and not ifgsm.uses_random_start
    assert dataclasses.replace(pgd, eps=2 / 255).step == pytest.approx(2 / 255 / 4)
    assert AttackSpec("simba", max_queries=50).query_budget == 50
    assert AttackSpec("simba", simba_iterations=None, max_queries=50).query_budget == 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        pgd.eps = 0.5  # type: ignore[misc]


def test_p_schedule_and_dct_order():
    assert p_selection(0.05, 0, 1000) == 0.05
    assert p_selection(0.05, 3, 1000) == pytest.approx(0.025)  # (10, 50] of 10 000 -> /2
    assert p_selection(0.05, 999, 1000) == pytest.approx(0.05 / 512)
    order = direction_order((3, 32, 32), "dct", 4, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(3 * 32 * 32))
    rows, cols = (order[:48] % 1024) // 32, order[:48] % 32
    assert rows.max() < 4 and cols.max() < 4  # the low-frequency block comes first


# -- white-box -----------------------------------------------------------------------


def test_pgd_raises_objective_more_with_larger_eps(net, data):
    x, y = data
    small = attack(net, x, y, AttackSpec("pgd", eps=2 / 255))
    large = attack(net, x, y, AttackSpec("pgd", eps=EPS8))
    assert np.all(small.objective > small.objective_clean)
    assert np.all(large.objective > small.objective)
    assert large.linf.max() <= EPS8 + 1e-6 and small.linf.max() <= 2 / 255 + 1e-6
    assert np.all(large.queries == 20)


def _assert_beats_random_noise(run, x: np.ndarray, y: np.ndarray | None, res, eps: float, full_budget: bool) -> None:
    """The reported objective is the real distortion of the attacked output (recomputed here
    from x_adv: MSE to y, or to the clean output), and it beats random noise by 10 %: +-eps
    everywhere (``full_budget``, what an L-inf white-box attack spends) or of the attack's own
    L2 size (a query-limited black-box attack). "objective > objective_clean" alone cannot
    fail for the clean objective, which starts at 0."""
    ref = run(x) if y is None else y
    def mse(a):
        return ((np.asarray(run(a), np.float64) - ref) ** 2).reshape(len(x), -1).mean(axis=1)
    x_adv = np.asarray(res.x_adv, np.float32)
    assert np.allclose(res.objective, mse(x_adv), rtol=1e-3, atol=1e-9)
    rng = np.random.default_rng(0)
    if full_budget:
        rand = eps * rng.choice([-1.0, 1.0], size=x.shape)
    else:
        delta = (x_adv - x).reshape(len(x), -1)
        rand = rng.standard_normal(delta.shape)
        rand *= np.linalg.norm(delta, axis=1, keepdims=True) / np.linalg.norm(rand, axis=1, keepdims=True)
        rand = np.clip(rand, -eps, eps).reshape(x.shape)
    noisy = np.clip(x + rand, 0, 1).astype(np.float32)
    assert np.all(res.objective > 1.1 * mse(noisy)), (res.objective, mse(noisy))


def _numpy_run(net):
    return lambda a: net(torch.from_numpy(np.ascontiguousarray(a, np.float32))).detach().numpy()


@pytest.mark.parametrize("name", ["ifgsm", "mifgsm"])
@pytest.mark.parametrize("objective", ["gt", "clean"])
def test_fgsm_variants_raise_objective(net, data, name, objective):
    x, y = data
    res = attack(net, x, y if objective == "gt" else None,
                 AttackSpec(name, eps=EPS8, steps=5, objective=objective))
    assert np.all(res.objective > res.objective_clean)
    _assert_beats_random_noise(_numpy_run(net), x.numpy(), y.numpy() if objective == "gt" else None, res, EPS8,
                               full_budget=True)


def test_cw_reaches_pgd_distortion_with_smaller_l2(net, data):
    x, y = data
    pgd = attack(net, x, y, AttackSpec("pgd", eps=EPS8))
    rise = pgd.objective - pgd.objective_clean
    # 5 x 50 instead of the default 9 x 100 Adam steps keeps the test fast; same outcome
    spec = AttackSpec("cw", cw_target=float(0.8 * rise.min()), cw_search_steps=5, cw_max_iter=50)
    cw = attack(net, x, y, spec)
    assert cw.success is not None and cw.success.all()
    assert np.all(cw.objective - cw.objective_clean >= 0.7 * rise)
    assert cw.l2.mean() < 0.85 * pgd.l2.mean()
    assert float(cw.x_adv.min()) >= 0.0 and float(cw.x_adv.max()) <= 1.0


def test_model_mode_and_parameters_left_alone(net, data):
    x, y = data
    net.train()
    net.c1.bias.requires_grad_(False)
    for name in ("pgd", "cw", "square"):
        net.modes_seen.clear()
        attack(net, x, y, AttackSpec(name, **SMALL[name]))
        assert net.modes_seen and not any(net.modes_seen)  # every forward ran in eval mode
    assert net.training
    assert [p.requires_grad for p in net.parameters()] == [True, False, True, True]
    assert all(p.grad is None for p in net.parameters())


# -- determinism, types, validation ---------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_attacks_are_deterministic_for_a_seed(net, data, name):
    x, y = data
    spec = AttackSpec(name, seed=7, **SMALL[name])
    first, second = attack(net, x, y, spec), attack(net, x, y, spec)
    assert torch.equal(first.x_adv, second.x_adv)
    assert np.array_equal(first.queries, second.queries)
    if name in ("pgd", "simba", "square"):
        other = attack(net, x, y, dataclasses.replace(spec, seed=8))
        assert not torch.equal(first.x_adv, other.x_adv)


def test_numpy_in_numpy_out_and_summary_is_json(net, data):
    x, y = data
    res = attack(net, x.numpy(), y.numpy(), AttackSpec("pgd", eps=EPS8, steps=3))
    assert isinstance(res.x_adv, np.ndarray) and res.x_adv.dtype == np.float32
    summary = json.loads(res.to_json())
    assert summary["attack"] == "pgd" and summary["queries_total"] == 2 * 3
    assert summary["spec"]["resolved_step"] == pytest.approx(EPS8 / 4)


@pytest.mark.parametrize("bad", ["range", "rank", "dtype", "batch"])
def test_bad_inputs_raise_usage_error(net, data, bad):
    x, y = data
    spec = AttackSpec("pgd", eps=EPS8, steps=1)
    if bad == "range":
        x = x * 2
    elif bad == "rank":
        x = x[0]
    elif bad == "dtype":
        x = (x * 255).to(torch.uint8)
    else:
        y = y[:1]
    with pytest.raises(UsageError):
        attack(net, x, y, spec)


def test_gt_objective_without_ground_truth_is_refused(net, data):
    x, _ = data
    for name in ("pgd", "simba"):
        with pytest.raises(UsageError, match="ground truth"):
            attack(net, x, None, AttackSpec(name, **SMALL[name]))


# -- black-box, engines, transfer ----------------------------------------------------


def test_simba_raises_objective_on_onnxruntime_session(onnx_engine, data):
    x, _ = data
    spec = AttackSpec("simba", eps=EPS8, objective="clean", simba_iterations=150)
    before = onnx_engine.images_seen
    res = attack(onnx_engine, x.numpy(), None, spec)
    assert np.all(res.objective > res.objective_clean)  # clean objective starts at 0
    seen = onnx_engine.images_seen
    _assert_beats_random_noise(onnx_engine, x.numpy(), None, res, EPS8, full_budget=False)
    onnx_engine.images_seen = seen  # the check's own runs are not the attack's queries
    assert res.linf.max() <= EPS8 + 1e-6
    assert np.all(res.queries > 150) and np.all(res.queries <= spec.query_budget)
    # the engine saw exactly the counted queries plus the two uncounted measurements
    assert onnx_engine.images_seen - before == res.total_queries + 2 * len(x)


def test_black_box_respects_query_budgets(net, data):
    x, y = data
    sq = attack(net, x, y, AttackSpec("square", eps=EPS8, square_queries=25))
    assert np.all(sq.queries == 25) and np.all(sq.objective > sq.objective_clean)
    sb = attack(net, x, y, AttackSpec("simba", eps=EPS8, simba_iterations=100, max_queries=40))
    assert np.all(sb.queries <= 40)
    free = attack(net, x, y, AttackSpec("simba", simba_iterations=20, simba_step=0.5))
    assert free.linf.max() >= 0.5 and np.all(free.objective > free.objective_clean)
    assert 0.0 <= float(free.x_adv.min()) and float(free.x_adv.max()) <= 1.0


def test_whitebox_on_engine_points_to_transfer(onnx_engine, data):
    x, y = data
    for name in ("pgd", "cw"):
        with pytest.raises(UsageError, match="surrogate"):
            attack(onnx_engine, x.numpy(), y.numpy(), AttackSpec(name, **SMALL[name]))
    with pytest.raises(UsageError, match="callable"):
        attack(object(), x, y, AttackSpec("simba", **SMALL["simba"]))


def test_transfer_from_surrogate_to_engine(net, onnx_engine, data):
    x, y = data
    before = onnx_engine.images_seen
    res = transfer_attack(net, onnx_engine, x, y, AttackSpec("pgd", eps=EPS8, steps=10))
    assert res.transfer and np.all(res.queries == 10)
    assert onnx_engine.images_seen - before == 2 * len(x)  # only the measurements
    assert np.all(res.objective > res.objective_clean)
    with pytest.raises(UsageError, match="surrogate"):
        transfer_attack(onnx_engine, net, x, y, AttackSpec("pgd", eps=EPS8))
