"""What an attack is asked to do: names, budgets and the frozen :class:`AttackSpec`.

Everything a user can get wrong is checked here, once, with a :class:`UsageError`
naming the option and the fix. Defaults that depend on other fields (PGD's step eps/4,
I-FGSM's eps/steps, PGD's random start) are kept as ``None`` in the fields and resolved
by properties, so ``dataclasses.replace(spec, eps=...)`` never carries a stale value.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from udc_edge.core.errors import UsageError

#: Gradient attacks: need a differentiable torch ``nn.Module``.
WHITEBOX_ATTACKS = ("pgd", "ifgsm", "mifgsm", "cw")
#: Query attacks: need only forward passes (a torch module or a numpy engine callable).
BLACKBOX_ATTACKS = ("simba", "square")
ATTACK_NAMES = WHITEBOX_ATTACKS + BLACKBOX_ATTACKS
#: Attacks bounded by an L-inf budget ``eps`` (SimBA only when eps is given).
LINF_ATTACKS = ("pgd", "ifgsm", "mifgsm", "simba", "square")
#: Attacks that cannot run without ``eps``.
EPS_REQUIRED = ("pgd", "ifgsm", "mifgsm", "square")
OBJECTIVES = ("gt", "clean")
SIMBA_BASES = ("dct", "pixel")
DEFAULT_STEPS = 20


_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EPS_RE = re.compile(rf"(?P<num>{_NUMBER})(?:\s*/\s*(?P<den>{_NUMBER}))?")


def parse_eps(text: str | float) -> float:
    """Parse an L-inf budget written as ``"8/255"`` or ``"0.0314"``; it must lie in (0, 1]."""
    raw = str(text).strip()
    match = _EPS_RE.fullmatch(raw)  # strict: one number or ONE fraction ("8/255/2" is refused)
    try:
        if match is None:
            raise ValueError(raw)
        num, den = match.group("num"), match.group("den")
        value = float(Fraction(num) / Fraction(den)) if den is not None else float(num)
    except (ValueError, ZeroDivisionError):
        raise UsageError(
            f"eps {text!r} is not a number or one fraction N/D",
            "write it as a fraction of the [0, 1] range, e.g. 8/255 or 0.0314",
        ) from None
    _check_eps(value, f"eps {text!r}")
    return value


def _check_eps(value: float, what: str) -> None:
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise UsageError(
            f"{what} = {value} is outside (0, 1]",
            "images are in [0, 1], so use a budget like 1/255, 2/255, 4/255 or 8/255",
        )


def parse_eps_list(text: str) -> tuple[float, ...]:
    """Parse comma-separated L-inf budgets (``"4/255,8/255"``); at least one."""
    values = tuple(parse_eps(e) for e in text.split(",") if e.strip())
    if not values:
        raise UsageError(f"--eps {text!r} gives no budget", "e.g. --eps 8/255 or --eps 4/255,8/255")
    return values


def parse_attack_names(text: str) -> tuple[str, ...]:
    """Parse ``"pgd,simba"`` into known attack names, suggesting close names for typos."""
    names = tuple(part.strip().lower() for part in str(text).split(",") if part.strip())
    if not names:
        raise UsageError("no attack given", f"choose from {', '.join(ATTACK_NAMES)}")
    for name in names:
        check_attack_name(name)
    return names


def check_attack_name(name: str) -> None:
    """Raise a :class:`UsageError` suggesting close names when ``name`` is unknown."""
    if name in ATTACK_NAMES:
        return
    close = difflib.get_close_matches(str(name).lower(), ATTACK_NAMES, n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    raise UsageError(
        f"unknown attack {name!r}", f"{hint}known attacks: {', '.join(ATTACK_NAMES)}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(value: Any) -> Any:
    """Builtin int/float for numpy scalars, so reports serialise to JSON."""
    if _is_int(value):
        return int(value)
    return float(value) if _is_real(value) else value


def _positive_int(value: Any, what: str, minimum: int = 1) -> None:
    if not _is_int(value) or value < minimum:
        raise UsageError(f"{what} = {value!r} must be an integer >= {minimum}",
                         f"set {what} to {minimum} or more")


def _positive(value: Any, what: str, upper: float | None = None, zero_ok: bool = False) -> None:
    ok = _is_real(value) and math.isfinite(value)
    ok = ok and (value >= 0 if zero_ok else value > 0) and (upper is None or value <= upper)
    if not ok:
        span = f"[0, {upper}]" if zero_ok else f"(0, {upper}]"
        span = span.replace("None]", "inf)")
        raise UsageError(f"{what} = {value!r} is outside {span}", f"give {what} a value in {span}")


@dataclass(frozen=True)
class AttackSpec:
    """One attack and its budget. Invalid values raise :class:`UsageError`; none is corrected.

    ``eps`` is an L-inf budget on [0, 1] images (required by pgd/ifgsm/mifgsm/square,
    optional for simba, refused for cw, which is an L2 attack whose norm is reported).
    ``objective`` is ``"gt"`` (output vs ground truth) or ``"clean"`` (output vs f(x)).
    C&W fields start with ``cw_``: ``cw_target`` is the rise of the per-image objective
    (output MSE) over its clean value that counts as success (see
    :mod:`udc_edge.attacks.cw`). ``max_queries`` caps the queries per image of a
    black-box attack, on top of its own iteration budget.
    """

    name: str
    eps: float | None = None
    objective: str = "gt"
    seed: int = 0
    steps: int = DEFAULT_STEPS
    step_size: float | None = None
    random_start: bool | None = None
    momentum: float = 1.0
    cw_search_steps: int = 9
    cw_confidence: float = 0.0
    cw_lr: float = 0.01
    cw_initial_const: float = 1.0
    cw_max_iter: int = 100
    cw_target: float = 0.01
    simba_iterations: int | None = 1000
    simba_step: float = 4 / 256
    simba_basis: str = "dct"
    simba_freq_dims: int | None = None
    square_queries: int | None = 1000
    square_p_init: float = 0.05
    max_queries: int | None = None

    def __post_init__(self) -> None:
        check_attack_name(self.name)
        self._check_budget()
        if self.objective not in OBJECTIVES:
            raise UsageError(f"unknown objective {self.objective!r}",
                             "use 'gt' (needs ground truth) or 'clean' (output of the clean input)")
        _positive_int(self.seed, "seed", minimum=0)
        _positive_int(self.steps, "steps")
        if self.step_size is not None:
            _positive(self.step_size, "step_size", upper=1.0)
        if self.random_start is not None and self.name not in ("pgd", "ifgsm", "mifgsm"):
            raise UsageError(f"random_start does not apply to {self.name}",
                             "leave it unset; it is for pgd, ifgsm and mifgsm")
        _positive(self.momentum, "momentum", zero_ok=True)
        _positive_int(self.cw_search_steps, "cw_search_steps")
        _positive_int(self.cw_max_iter, "cw_max_iter")
        _positive(self.cw_confidence, "cw_confidence", zero_ok=True)
        _positive(self.cw_lr, "cw_lr")
        _positive(self.cw_initial_const, "cw_initial_const")
        _positive(self.cw_target, "cw_target")
        _positive(self.simba_step, "simba_step", upper=1.0)
        if self.simba_basis not in SIMBA_BASES:
            raise UsageError(f"unknown simba_basis {self.simba_basis!r}",
                             f"use one of {', '.join(SIMBA_BASES)}")
        if self.simba_freq_dims is not None:
            _positive_int(self.simba_freq_dims, "simba_freq_dims")
        _positive(self.square_p_init, "square_p_init", upper=1.0)

    def _check_budget(self) -> None:
        if self.eps is not None:
            if not _is_real(self.eps):
                raise UsageError(f"eps = {self.eps!r} is not a number",
                                 "parse text such as '8/255' with parse_eps first")
            _check_eps(float(self.eps), "eps")
        elif self.name in EPS_REQUIRED:
            raise UsageError(f"attack {self.name} needs an L-inf budget eps",
                             "give eps, e.g. 8/255")
        if self.name == "cw" and self.eps is not None:
            raise UsageError("cw is an L2 attack and takes no eps",
                             "leave eps unset for cw; its L2 norm is reported per image")
        for field in ("simba_iterations", "square_queries", "max_queries"):
            value = getattr(self, field)
            if value is not None:
                _positive_int(value, field, minimum=2 if field != "simba_iterations" else 1)
        if self.name in BLACKBOX_ATTACKS and self.query_budget is None:
            own = "simba_iterations" if self.name == "simba" else "square_queries"
            raise UsageError(f"black-box attack {self.name} has no query budget",
                             f"set {own} or max_queries")

    @property
    def is_whitebox(self) -> bool:
        """True for attacks that need gradients of a torch model."""
        return self.name in WHITEBOX_ATTACKS

    @property
    def linf_eps(self) -> float:
        """eps as a float; a :class:`UsageError` for an attack given none."""
        if self.eps is None:
            raise UsageError(f"attack {self.name} has no L-inf budget eps", "give eps, e.g. 8/255")
        return float(self.eps)

    @property
    def step(self) -> float:
        """Step of the iterative L-inf attacks: step_size, else eps/4 (PGD) or eps/steps."""
        if self.step_size is not None:
            return float(self.step_size)
        eps = self.linf_eps
        return eps / 4 if self.name == "pgd" else eps / self.steps

    @property
    def uses_random_start(self) -> bool:
        """PGD starts uniformly in the eps ball unless told otherwise; I-/MI-FGSM do not."""
        return self.random_start if self.random_start is not None else self.name == "pgd"

    @property
    def query_budget(self) -> int | None:
        """Queries per image a black-box attack may spend (None for white-box attacks).

        SimBA: at most ``1 + 2 * simba_iterations`` (one baseline query, then up to two
        per direction); Square: ``square_queries``. ``max_queries`` lowers either.
        """
        if self.name == "simba":
            own = None if self.simba_iterations is None else 1 + 2 * self.simba_iterations
        elif self.name == "square":
            own = self.square_queries
        else:
            return None
        caps = [v for v in (own, self.max_queries) if v is not None]
        return min(caps) if caps else None

    def to_dict(self) -> dict[str, Any]:
        """The fields plus the resolved step, random start and query budget, for reports."""
        out = {k: _plain(v) for k, v in asdict(self).items()}
        if self.name in ("pgd", "ifgsm", "mifgsm"):
            out["resolved_step"] = self.step
            out["resolved_random_start"] = self.uses_random_start
        out["resolved_query_budget"] = self.query_budget
        return out
