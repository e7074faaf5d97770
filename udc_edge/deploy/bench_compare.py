"""``udc-edge bench --compare``: regression verdicts that mean something.

The baseline must have been measured on the same input shape (refused otherwise), and a row
is compared only with the baseline row of the same engine, backend and precision. Verdicts
come from the raw per-round samples: a bootstrap 95 % interval of the ratio of medians
(new / old). "regression" or "improvement" only when the whole interval lies beyond
+-MIN_EFFECT, "same" when it lies inside, otherwise "inconclusive"; with fewer than
MIN_SAMPLES rounds on either side the verdict is "inconclusive" too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from udc_edge.core.errors import UsageError

if TYPE_CHECKING:
    from udc_edge.deploy.bench import BenchReport

MIN_SAMPLES = 20
MIN_EFFECT = 0.05
RESAMPLES = 4000


def ratio_interval(
    old: list[float], new: list[float], seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(median ratio new/old, lower, upper): a percentile bootstrap over both sample sets."""
    a, b = np.asarray(old, np.float64), np.asarray(new, np.float64)
    rng = np.random.default_rng(seed)
    ra = np.median(rng.choice(a, (RESAMPLES, a.size)), axis=1)
    rb = np.median(rng.choice(b, (RESAMPLES, b.size)), axis=1)
    ratios = rb / ra
    tail = (1 - level) / 2 * 100
    return (
        float(np.median(b) / np.median(a)),
        float(np.percentile(ratios, tail)),
        float(np.percentile(ratios, 100 - tail)),
    )


def verdict(lo: float, hi: float, min_effect: float = MIN_EFFECT) -> str:
    """regression / improvement / same / inconclusive from the interval of new/old."""
    if lo > 1 + min_effect:
        return "regression"
    if hi < 1 - min_effect:
        return "improvement"
    if lo >= 1 - min_effect and hi <= 1 + min_effect:
        return "same"
    return "inconclusive"


def _load(old_path: str | Path) -> dict:
    try:
        doc = json.loads(Path(old_path).read_text())
        rows = {(r["name"], r.get("threads", 0)): r for r in doc["rows"]}  # a row per engine and thread count
        shape = list(doc["spec"]["shape"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"--compare {old_path} is not a bench.json", "give a file written by udc-edge bench") from exc
    return {"rows": rows, "shape": shape, "threads": doc["spec"].get("threads")}


def compare_reports(new: BenchReport, old_path: str | Path) -> list[str]:
    """Set each row's verdict against an older bench.json and return one note per row."""
    old = _load(old_path)
    shape = list(new.spec["shape"])
    if old["shape"] != shape:
        def fmt(s):
            return "x".join(map(str, s))
        raise UsageError(f"--compare {old_path} was measured at --shape {fmt(old['shape'])}, this run at {fmt(shape)}",
                         f"rerun with --shape {fmt(old['shape'])}, or measure a new baseline")
    notes = []
    if old["threads"] != new.spec.get("threads"):
        notes.append(f"warning: the baseline ran with --threads {old['threads']}, this run with "
                     f"{new.spec.get('threads')}; times are not comparable")
    for row in new.rows:
        o = old["rows"].get((row.name, row.threads))
        if not o or not o.get("latency_ms") or not row.latency_ms:
            continue
        if (o.get("backend"), o.get("precision")) != (row.backend, row.precision):
            row.verdict = "not comparable"
            notes.append(f"{row.name}: baseline is {o.get('backend')} {o.get('precision')}, this run "
                         f"{row.backend} {row.precision}: not comparable")
            continue
        a, b = o["latency_ms"].get("samples") or [], row.samples
        if min(len(a), len(b)) < MIN_SAMPLES:
            row.verdict = "inconclusive"
            notes.append(f"{row.name}: inconclusive: {len(a)} baseline and {len(b)} new rounds, a verdict needs "
                         f">= {MIN_SAMPLES} each (--iters {MIN_SAMPLES})")
            continue
        ratio, lo, hi = ratio_interval(a, b)
        row.verdict = verdict(lo, hi)
        notes.append(f"{row.name}: median {np.median(a):.2f} -> {np.median(b):.2f} ms ({ratio:.2f}x, 95 % interval "
                     f"{lo:.2f}-{hi:.2f}x, threshold +-{MIN_EFFECT:.0%}): {row.verdict}")
    return notes
